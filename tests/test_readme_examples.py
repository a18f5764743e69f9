"""The README's Python examples run as written, against a cluster and its model store.

The blocks marked `# example: python-api` are run in a directory whose state/models is the test
cluster's model store; the only change made to them is the coordinator's address.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cluster_helpers import prepare_store, running_cluster, write_config

pytestmark = pytest.mark.cluster
README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n# example: python-api\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_the_python_api_examples():
    assert len(EXAMPLES) == 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readme")
    config_path = write_config(tmp)
    prepare_store(tmp, config_path)
    (tmp / "state").mkdir()
    (tmp / "state" / "models").symlink_to(tmp / "models")
    with running_cluster(config_path) as cluster:
        cluster.tmp = tmp
        yield cluster


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_a_readme_example_runs(cluster, index):
    code = EXAMPLES[index].replace("127.0.0.1:50050", cluster.coordinator.address)
    out = subprocess.run([sys.executable, "-c", code], cwd=cluster.tmp, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip(), "an example prints what it decided"

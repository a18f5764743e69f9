"""The serving processes stay light: importing their servers pulls in no torch, training or critic.

import-linter checks the import graph statically (.ci/run); this checks what a fresh interpreter
really loads, which also catches an import hidden in a dependency's own imports.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
import {module}
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "training", "critic", "optuna", "pettingzoo"}})
print(json.dumps({{"heavy": heavy, "agents_model": "agents.model" in sys.modules}}))
"""


@pytest.mark.parametrize("module", ["agents.serving.server", "coordinator.server"])
def test_a_server_module_loads_no_torch_training_or_critic(module):
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                         timeout=60, check=True)
    loaded = json.loads(out.stdout)
    assert loaded == {"heavy": [], "agents_model": False}, f"{module} loads {loaded}"

"""Atomic writes: permissions follow the umask, and a sweep removes only leftovers of dead writers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from tactical.atomic import atomic_directory, atomic_write_text, sweep_temporaries


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_and_directories_get_umask_permissions(tmp_path, umask_022):
    atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_directory(tmp_path / "v000001") as tmp:
        atomic_write_text(tmp / "b.txt", "y")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "v000001").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "v000001" / "b.txt").stat().st_mode) == 0o644


def test_sweep_removes_a_dead_writers_leftover_and_keeps_a_live_one(tmp_path):
    # a writer that dies inside atomic_directory, as a SIGKILL would leave it
    code = ("import os, sys; from tactical.atomic import atomic_directory\n"
            "with atomic_directory(sys.argv[1]) as tmp:\n"
            "    (tmp / 'half.onnx').write_bytes(b'x'); os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "v000007")], check=True)
    with atomic_directory(tmp_path / "v000008") as mine:  # this process is still writing
        leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-"))
        assert len(leftovers) == 2
        assert sweep_temporaries(tmp_path) == 1
        assert mine.exists() and not any(p.name.startswith(".tmp-v000007") for p in tmp_path.iterdir())
    assert (tmp_path / "v000008").is_dir() and not (tmp_path / "v000007").exists()


def test_a_version_directory_is_never_overwritten(tmp_path):
    with atomic_directory(tmp_path / "v000001") as tmp:
        atomic_write_text(tmp / "a", "first")
    with pytest.raises(FileExistsError):
        with atomic_directory(tmp_path / "v000001") as tmp:
            atomic_write_text(tmp / "a", "second")
    assert (tmp_path / "v000001" / "a").read_text() == "first"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]

"""Atomic writes: permissions follow the umask, and a sweep removes only leftovers of dead writers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from tactical.atomic import atomic_directory, atomic_write_text, sweep_temporaries


def test_files_and_directories_get_umask_permissions(tmp_path):
    code = ("import sys; from pathlib import Path; from tactical.atomic import atomic_directory, atomic_write_text\n"
            "root = Path(sys.argv[1]); atomic_write_text(root / 'a.txt', 'x')\n"
            "with atomic_directory(root / 'v000001') as tmp:\n"
            "    atomic_write_text(tmp / 'b.txt', 'y')\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, preexec_fn=lambda: os.umask(0o027))
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "v000001").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "v000001" / "b.txt").stat().st_mode) == 0o640


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
    with pytest.raises(FileExistsError), atomic_directory(tmp_path / "v000001") as tmp:
        atomic_write_text(tmp / "a", "second")
    assert (tmp_path / "v000001" / "a").read_text() == "first"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_a_leftover_with_our_pid_from_before_we_started_is_swept(tmp_path):
    # a restarted container often gives the new process the dead one's pid
    from tactical.atomic import _tmp_prefix

    old = tmp_path / (_tmp_prefix(tmp_path / "v000003") + "abc")
    old.mkdir()
    os.utime(old, (1_000_000_000, 1_000_000_000))
    assert sweep_temporaries(tmp_path) == 1 and not old.exists()

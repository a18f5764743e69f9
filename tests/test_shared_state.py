"""Coordinators sharing one state directory serve one active version: a switch by any is every one's."""

from __future__ import annotations

import json
import subprocess
import sys

from coordinator.state import ActiveVersionState
from tactical.atomic import atomic_write_text
from tactical.config import default_config
from tactical_engine.launcher import coordinator_metrics_ports


def test_a_switch_by_one_coordinator_is_the_next_decision_of_every_other(tmp_path):
    a, b = ActiveVersionState(tmp_path), ActiveVersionState(tmp_path)
    a.activate(3)
    assert b.current() == 3  # nothing but the per-decision read in between
    a.activate(5)
    assert b.current() == 5 and b.history == [3]
    assert ActiveVersionState(tmp_path).version == 5  # one started later reads the same


def test_a_rollback_through_another_coordinator_pops_the_shared_history(tmp_path):
    a, b = ActiveVersionState(tmp_path), ActiveVersionState(tmp_path)
    for version in (1, 2, 3):
        a.activate(version)
    assert b.rollback_target() == 2
    assert b.rollback() == 3 and a.current() == 2
    assert a.rollback_target() == 1  # not 2 again: the history is the file's, not a stale copy
    a.rollback()
    assert b.current() == 1 and b.rollback_target() is None


def test_a_change_without_the_signal_is_followed_from_the_file(tmp_path):
    """A switcher killed between writing the file and signalling (or a hand edit): the monitor's once-a-second
    follow() finds it."""
    a = ActiveVersionState(tmp_path)
    a.activate(1)
    atomic_write_text(a.path, json.dumps({"active": 4, "history": [1]}))
    a.follow()
    assert a.version == 4 and a.history == [1]


def test_a_damaged_shared_file_keeps_the_version_being_served(tmp_path):
    a = ActiveVersionState(tmp_path)
    a.activate(2)
    atomic_write_text(a.path, "{not json")
    a.follow()
    assert a.current() == 2
    ActiveVersionState(tmp_path).activate(3)  # the next switch writes a good file again
    assert a.current() == 3


def test_switches_from_several_processes_at_once_lose_none(tmp_path):
    """Each switch is a read-modify-write of the shared file under a lock: two processes switching 40 times
    each, at the same time, leave all 80 in the history."""
    script = ("import sys; from coordinator.state import ActiveVersionState; s = ActiveVersionState(sys.argv[1]); "
              "base = int(sys.argv[2])\nfor k in range(40): s.activate(base + k)")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(base)]) for base in (1000, 2000)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    state = ActiveVersionState(tmp_path)
    assert sorted([*state.history, state.version]) == [*range(1000, 1040), *range(2000, 2040)]


def test_each_coordinator_gets_a_metrics_port_no_other_endpoint_takes():
    cfg = default_config()  # coordinator 9150, agents 9151-9153
    assert coordinator_metrics_ports(cfg, 3) == [9150, 9154, 9155]
    assert coordinator_metrics_ports(cfg.replace(serving={"metrics_port": 0}), 2) == [0, 0]  # 0: none, for all

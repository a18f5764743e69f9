"""The metrics file: whole lines appended to the same file (a follower like `tail -f` keeps up),
each durable before the update goes on, each naming its run and wall-clock time."""

from __future__ import annotations

import json
import os
import time

import training.metrics_log as metrics_log
from training.metrics_log import MetricsLog, read_metrics


def test_records_are_appended_to_the_file_a_follower_is_reading(tmp_path):
    path = tmp_path / "logs" / "metrics.jsonl"
    log = MetricsLog(path)
    log.write({"update": 1, "episode_reward": 0.5})
    with open(path, encoding="utf-8") as follower:  # as `tail -f` holds it open
        assert json.loads(follower.readline())["update"] == 1
        inode = os.stat(path).st_ino
        log.write({"update": 2, "episode_reward": 0.25})
        assert json.loads(follower.readline())["update"] == 2  # not a new file renamed over the old one
        assert follower.read() == ""
    assert os.stat(path).st_ino == inode


def test_each_record_is_one_write_of_a_whole_line_then_fsync(tmp_path, monkeypatch):
    calls = []
    real_write, real_fsync = os.write, os.fsync
    monkeypatch.setattr(metrics_log.os, "write", lambda fd, data: calls.append(("write", data)) or real_write(fd, data))
    monkeypatch.setattr(metrics_log.os, "fsync", lambda fd: calls.append(("fsync", None)) or real_fsync(fd))
    MetricsLog(tmp_path / "m.jsonl").write({"update": 1, "note": "x" * 20_000})  # longer than any buffer
    assert [kind for kind, _ in calls] == ["write", "fsync"]
    assert calls[0][1].endswith(b"\n") and calls[0][1].count(b"\n") == 1


def test_records_name_their_run_and_time_so_runs_sharing_a_file_stay_apart(tmp_path):
    path = tmp_path / "m.jsonl"
    started = time.time()
    first, resumed = MetricsLog(path), MetricsLog(path)
    first.write({"update": 1})
    first.write({"update": 2})
    resumed.write({"update": 2})  # a run resumed from update 1's checkpoint logs update 2 again
    records = read_metrics(path)
    assert [(r["run"], r["update"]) for r in records] == [(first.run, 1), (first.run, 2), (resumed.run, 2)]
    assert first.run != resumed.run
    assert started <= records[0]["time"] <= records[1]["time"] <= records[2]["time"] <= time.time()

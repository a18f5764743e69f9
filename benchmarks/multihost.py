"""Cross-host numbers from the network-namespace test bed: decision latency over mutual TLS with and
without added delay on one agent's link, a partition's cost, and torchrun with ranks on two hosts.

    sudo .venv/bin/python benchmarks/multihost.py [--decisions 2000] [--delays 5,10,20] [--updates 3] [--repeats 2]

Needs root (network namespaces); everything it starts runs inside the bed and is removed at the end.
It imports tests/netbed.py, the test bed library, by putting the tests directory on sys.path.

Hosts: fvg, momentum, entry (one agent each), coord-a (reaches fvg through a delaying TCP relay
inside fvg's host; these kernels lack `tc netem`), coord-b (reaches every agent directly), client
(the load: one closed-loop DecideStream), train0 and train1. Both coordinators keep the product's
50 ms deadline. The relay's delay is added in each direction, so it adds twice that to a round trip.

Prints one table of decision latency (client round trip and coordinator-measured, fvg's vote) and
degraded share per scenario, with a reference measured in the same run (the same processes all on
one host, train1, so that the machine's load of the moment weighs on both); the partition timings;
and one table of torchrun runs: 2 ranks on 2 hosts (parameters compared bit for bit), the same 2
ranks on one host, and the documented command `torchrun ... -m tactical_engine train --config X --updates N`
across the two hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # for netbed, the test bed library
import netbed


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.percentile(values, 50):.2f} / {np.percentile(values, 99):.2f}"


def measure(cluster: netbed.BedCluster, coordinator: str, decisions: int, warmup: int = 100,
            host: str = "client") -> dict:
    """One closed-loop stream of warmup + `decisions` from `host`; statistics over the last `decisions`."""
    stream = cluster.stream(coordinator, host=host, interval_ms=0, count=warmup + decisions, seconds=900)
    stream.wait(lambda rs: len(rs) >= warmup + decisions, 600, f"{decisions} decisions")
    summary = stream.stop()
    records = stream.records()[warmup:]
    fvg = [netbed.vote(r, "fvg")[3] for r in records if netbed.vote(r, "fvg")[1]]
    return {"round_trip": [(r["recv"] - r["sent"]) * 1e3 for r in records], "coordinator": [r["lat"] for r in records],
            "fvg": fvg, "degraded": sum(r["deg"] for r in records) / len(records), "n": len(records),
            "failures": summary["failures"], "seconds": records[-1]["recv"] - records[0]["sent"]}


def partition(cluster: netbed.BedCluster, agent: str = "entry") -> dict:
    """Cut `agent`'s host off under a stream on coord-b until the coordinator reports it lost, then back."""
    bed = cluster.bed
    stream = cluster.stream("coord-b", interval_ms=5)
    _, path, stop = cluster.watch("coord-b")
    try:
        stream.wait(lambda rs: len(rs) >= 50, 60, "50 decisions")
        bed.link_down(agent)
        down = time.monotonic()
        noticed = None
        while noticed is None and time.monotonic() - down < 60:
            for line in path.read_text().splitlines():
                p = json.loads(line)
                if p["t"] > down and "agents" in p and not p["agents"][agent][0]:
                    noticed = p["t"] - down
                    break
            time.sleep(0.05)
        time.sleep(1.0)
        bed.link_up(agent)
        up = time.monotonic()
        stream.wait(lambda rs: any(r["sent"] > up and netbed.vote(r, agent)[1] for r in rs), 60, f"{agent} back")
        time.sleep(0.5)
    finally:
        summary = stream.stop()
        stop.touch()
    records = stream.records()
    unnoticed = [r for r in records if down < r["sent"] and r["recv"] < down + (noticed or 0)]
    noticed_phase = [r for r in records if down + (noticed or 0) < r["sent"] and r["recv"] < up]
    back = min(r["recv"] for r in records if r["sent"] > up and netbed.vote(r, agent)[1]) - up
    return {"noticed": noticed, "back": back, "failures": summary["failures"],
            "degraded": all(r["deg"] for r in unnoticed + noticed_phase),
            "unnoticed_ms": [(r["recv"] - r["sent"]) * 1e3 for r in unnoticed],
            "noticed_ms": [(r["recv"] - r["sent"]) * 1e3 for r in noticed_phase]}


def switch_windows(cluster: netbed.BedCluster, switches: int) -> dict:
    """Coordinated switches between versions 1 and 2 of both coordinators under a stream to each: the window
    each rollout reports (the coordinators' switch times) and the one their audit logs show."""
    streams = {c: cluster.stream(c, interval_ms=5) for c in cluster.coordinators}
    timeline, reported = [(float("-inf"), float("-inf"), 1, 0.0)], []
    try:
        for s in streams.values():
            s.wait(lambda rs: len(rs) >= 20, 60, "20 decisions before the switches")
        for k in range(switches):
            version = 2 if k % 2 == 0 else 1
            began, began_wall = time.monotonic(), time.time()
            out = cluster.rollout(version, *cluster.coordinators)
            reported.append(float(out.split("switched within ")[1].split(" ms")[0]))
            timeline.append((began, time.monotonic(), version, began_wall))
            for c, s in streams.items():
                s.wait_count_after(time.monotonic(), 20, 60, f"20 decisions after switch {k + 1} on {c}")
    finally:
        for s in streams.values():
            s.stop()
    for c in cluster.coordinators:
        deadline = time.monotonic() + 30
        while cluster.status(c)["audit_waiting"] and time.monotonic() < deadline:
            time.sleep(0.2)
    audited = netbed.mixed_windows_ms({c: cluster.audit_rows(c) for c in cluster.coordinators}, timeline)
    return {"reported": reported, "audited": audited}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2000, help="decisions per latency scenario (default 2000)")
    parser.add_argument("--delays", default="5,10,20", help="relay delays on fvg's link, ms each way (default 5,10,20)")
    parser.add_argument("--updates", type=int, default=3, help="training updates per torchrun run (default 3)")
    parser.add_argument("--repeats", type=int, default=2, help="torchrun runs per placement, alternating (default 2)")
    parser.add_argument("--no-training", action="store_true", help="skip the torchrun runs")
    parser.add_argument("--switches", type=int, default=10,
                        help="coordinated rollouts across the two coordinators under load (default 10)")
    args = parser.parse_args()
    delays = [float(d) for d in args.delays.split(",") if d]

    started = time.monotonic()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="netbed-bench-") as tmp, netbed.Bed(netbed.HOSTS, tmp) as bed:
        print(f"bed {bed.run_id}: {len(bed.hosts)} hosts on {bed.subnet}, isolation verified "
              f"(each host: lo + {netbed.HOST_IF}, no default route, outside unreachable)", flush=True)
        rows, training = [], []
        if not args.no_training:  # first, while the two cores are the trainers' alone
            training = run_training(bed, args.updates, args.repeats)
        cluster = netbed.start_cluster(bed, versions=(1, 2), serving={"deadline_ms": 50.0})
        print("cluster up: 3 agents, relay, 2 coordinators, version 1 active, mutual TLS", flush=True)
        # the reference: the same processes on one host (train1), client included, in the same run
        local = netbed.start_cluster(bed, versions=(1,), coordinators=("train1",), relay_for=None,
                                     agent_hosts={a: "train1" for a in netbed.AGENT_NAMES},
                                     serving={"deadline_ms": 50.0}, config_name="one-host")
        print("reference cluster up: the same processes all on train1", flush=True)
        rows.append(("one host (train1): client, coordinator, agents", "-",
                     measure(local, "train1", args.decisions, host="train1")))
        rows.append(("coord-b, all links direct", "-", measure(cluster, "coord-b", args.decisions)))
        relay = cluster.relays["fvg"]
        for delay in [0.0, *delays]:
            relay.set_delay(delay)
            label = f"+{delay:g} ms each way (+{2 * delay:g} ms RTT)" if delay else "relay, no delay"
            rows.append(("coord-a, fvg via relay", label, measure(cluster, "coord-a", args.decisions)))
        relay.set_delay(0)
        windows = switch_windows(cluster, args.switches)
        cut = partition(cluster)
    elapsed = time.monotonic() - started

    print(f"\ndecisions, 1 closed-loop stream, client host -> coordinator host -> 3 agent hosts (or all on one), "
          f"mTLS, deadline 50 ms, {args.decisions} decisions each:\n")
    print("| path | added on fvg's link | round trip p50 / p99 ms | coordinator p50 / p99 ms "
          "| fvg vote p50 / p99 ms | degraded | failed calls |")
    print("|---|---|---|---|---|---|---|")
    for path, added, m in rows:
        print(f"| {path} | {added} | {percentiles(m['round_trip'])} | {percentiles(m['coordinator'])} "
              f"| {percentiles(m['fvg'])} | {m['degraded']:.1%} | {m['failures']} |")
    print(f"\npartition of entry's host under a stream to coord-b (5 ms between decisions): the coordinator "
          f"reported entry lost after {cut['noticed']:.1f} s; until then decisions took p50 / p99 "
          f"{percentiles(cut['unnoticed_ms'])} ms (each waits for the deadline), afterwards "
          f"{percentiles(cut['noticed_ms'])} ms; every one degraded: {cut['degraded']}; entry voted again "
          f"{cut['back']:.1f} s after the link came back; failed calls {cut['failures']}")
    print(f"\ncoordinated activation across coord-a and coord-b, {args.switches} rollouts (v1 <-> v2) under a "
          f"stream to each (5 ms between decisions): window between the first and the last switch as reported "
          f"(the coordinators' clocks) max {max(windows['reported']):.0f} ms, median "
          f"{np.median(windows['reported']):.0f} ms; by the audit logs (one coordinator already on the new "
          f"version while the other still answered with the old) max {max(windows['audited'])} ms, median "
          f"{np.median(windows['audited']):.0f} ms")
    if training:
        print(f"\ntorchrun, gloo, {args.updates} updates of the packaged training config "
              f"(32 envs x 64 steps per rank per update):\n")
        print("| run | wall time (torchrun) | in train() | env steps/s, both ranks | parameters equal across ranks |")
        print("|---|---|---|---|---|")
        for row in training:
            print("| " + " | ".join(row) + " |")
    print(f"\n(whole run {elapsed:.0f} s; load average {load_before[0]:.2f} before it, {os.getloadavg()[0]:.2f} "
          f"after, on {os.cpu_count()} cores: the bed shares the machine with whatever else runs)")


def run_training(bed: netbed.Bed, updates: int, repeats: int) -> list[tuple[str, ...]]:
    """2 ranks on 2 hosts and on 1 host, alternating `repeats` times (the machine's load moves between
    runs; alternating shows how much), then the documented `-m tactical_engine train` command across 2 hosts once."""
    rows = []
    for run in range(1, repeats + 1):
        for label, hosts, per_node in [("2 ranks on 2 hosts (train0, train1)", ["train0", "train1"], 1),
                                       ("2 ranks on 1 host (train0)", ["train0"], 2)]:
            out = bed.root / f"ranks-{len(hosts)}hosts-{run}"
            result = netbed.train_ranks(bed, hosts, overrides={}, updates=updates, out=out,
                                        nproc_per_node=per_node, timeout=900)
            r0, r1 = result["ranks"]
            equal = all(np.array_equal(r0["params"][k].numpy(), r1["params"][k].numpy()) for k in r0["params"])
            rows.append((f"{label}, run {run}", f"{result['seconds']:.1f} s", f"{r0['seconds']:.1f} s",
                         f"{r0['performance']['steps_per_second']:,.0f}",  # the trainer's: over every rank
                         "bit-identical" if equal else "DIFFERENT"))
            print(f"torchrun {label}, run {run}: done", flush=True)
    config = netbed.write_bed_config(bed, "train")
    procs, seconds = netbed.torchrun(bed, ["train0", "train1"], ["-m", "tactical_engine", "train", "--config",
                                                                 str(config), "--updates", str(updates)],
                                     timeout=900, name="cli")
    text = procs[0].stdout.read_text()
    trained = re.search(r"trained updates \S+ in ([\d.]+) s: ([\d,]+) env steps/s", text)
    published = re.search(r"published to .* \(publish policy \w+\): (.*)", text)
    rows.append(("`torchrun ... -m tactical_engine train` on 2 hosts", f"{seconds:.1f} s",
                 f"{trained.group(1)} s (whole session)" if trained else "?",
                 trained.group(2) if trained else "?",
                 f"not compared (rank 0 published version {published.group(1)})" if published else "?"))
    print("torchrun -m tactical_engine train: done", flush=True)
    return rows


if __name__ == "__main__":
    main()

"""Several coordinators on one port: what a second one buys on this machine, measured side by side.

    python benchmarks/coordinators.py [--slices 10] [--slice-seconds 2]

Two real local clusters run at once (benchmarks/paired.py), identical but for `tactical up
--coordinators`: 1 and 2. Load alternates between them in slices, one client stream and then
32, each stream on a TCP connection of its own (the channels of one client process would share
one connection, and so one coordinator); with 2 coordinators the kernel spreads the connections
over both (SO_REUSEPORT), afresh each slice. Reported per cluster and stream count: decisions/s,
client latency p50/p99, and the CPU each process used during the slices, in cores (1.00 is one
core busy all the time), with the client's: every process, the client included, shares this
machine's cores.
"""

from __future__ import annotations

import argparse
import os

STREAMS = (1, 32)
COORDINATORS = (1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=10, help="load slices per cluster and stream count")
    parser.add_argument("--slice-seconds", type=float, default=2.0)
    args = parser.parse_args()

    from paired import CLIENT, run_paired

    names = {n: f"{n} coordinator{'s' if n > 1 else ''}" for n in COORDINATORS}
    result = run_paired({names[n]: lambda directory: {} for n in COORDINATORS}, STREAMS, slices=args.slices,
                        slice_seconds=args.slice_seconds,
                        cluster_options={names[n]: {"coordinators": n} for n in COORDINATORS},
                        load_options=lambda streams: {"connections": streams})

    print(f"{os.cpu_count()} cores; CPU in cores over the slices (coordinators each, then in total)")
    print(f"{'cluster':<16}{'streams':>8}{'decisions':>11}{'per s':>9}{'p50 ms':>9}{'p99 ms':>9}   "
          f"{'coordinators':<14}{'agents':>7}{'client':>8}{'total':>7}{'us CPU/decision':>17}")
    for streams in STREAMS:
        for n in COORDINATORS:
            key = (names[n], streams)
            latencies, cpu, wall = result.latencies_ms[key], result.cpu_s[key], result.cpu_wall_s[key]
            coordinators = [seconds / wall for name, seconds in cpu.items() if name.startswith("coordinator")]
            agents = sum(seconds for name, seconds in cpu.items() if name.startswith("agent")) / wall
            total = sum(cpu.values()) / wall
            per_decision = sum(cpu.values()) / (len(latencies) * wall / result.seconds[key]) * 1e6
            print(f"{names[n]:<16}{streams:>8}{len(latencies):>11,}{len(latencies) / result.seconds[key]:>9,.0f}"
                  f"{result.p(names[n], streams, 50):>9.2f}{result.p(names[n], streams, 99):>9.2f}   "
                  f"{' + '.join(f'{c:.2f}' for c in coordinators):<14}{agents:>7.2f}{cpu[CLIENT] / wall:>8.2f}"
                  f"{total:>7.2f}{per_decision:>17.0f}")
    print("(latencies measured by the client from send to answer; CPU per decision: all processes with the client)")
    print()
    for streams in STREAMS:
        one, two = (names[n] for n in COORDINATORS)
        rate = [len(result.latencies_ms[(name, streams)]) / result.seconds[(name, streams)] for name in (one, two)]
        print(f"{streams} stream(s), 2 coordinators against 1: decisions/s x{rate[1] / rate[0]:.2f}, p50 "
              f"x{result.p(two, streams, 50) / result.p(one, streams, 50):.2f}, p99 "
              f"x{result.p(two, streams, 99) / result.p(one, streams, 99):.2f}")


if __name__ == "__main__":
    main()

"""Shadow overhead: decision latency with a shadow version running beside the active one, and without.

    python benchmarks/shadow_overhead.py [--slices 20] [--slice-seconds 1]

Two real local clusters run at once (benchmarks/paired.py), identical but for a shadow: on one,
a second version is staged and made the shadow, so every agent runs two forward passes per
message and the coordinator aggregates both; the other serves the active version alone. Load
alternates between them in slices with 1 client stream, then 32. Target (issue 15): the shadow
moves the client's decision p99 by no more than +10%. Also printed: each process's CPU per
decision, which says where a shadow's cost lands.
"""

from __future__ import annotations

import argparse

STREAMS = (1, 32)
TARGET = 0.10


def with_shadow(clusters: dict):
    """Publish version 1 into the 'shadow' cluster's store, stage it and make it the shadow."""
    import torch

    from agents.serving.model_store import ModelStore
    from tactical.rpc import admin_token
    from tactical_engine.client import TacticalClient
    from tactical_engine.rollout import stage
    from training.system import TacticalMARLSystem
    from training.versions import publish

    cluster = clusters["shadow"]
    cfg = cluster.cfg
    torch.manual_seed(1)
    store = ModelStore(cfg.paths.model_store)
    version = publish(store, TacticalMARLSystem(cfg).eval(), source="benchmark shadow")
    token = admin_token(cfg)
    with TacticalClient(cluster.coordinator.address, cfg, admin_token=token) as client:
        stage(client, store, version, cfg, token)
        client.set_shadow(version)
    return lambda: None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=20, help="load slices per cluster and stream count")
    parser.add_argument("--slice-seconds", type=float, default=1.0)
    args = parser.parse_args()

    from paired import run_paired

    result = run_paired({"shadow": lambda directory: {}, "none": lambda directory: {}}, STREAMS, slices=args.slices,
                        slice_seconds=args.slice_seconds, while_running=with_shadow)
    print(result.table("shadow", ("shadow", "none"), STREAMS))
    print()
    print(result.cpu_table(("shadow", "none"), STREAMS))
    print()
    print(result.verdicts("shadow", "none", STREAMS, TARGET, "with a shadow version"))


if __name__ == "__main__":
    main()

"""Training benchmark: end-to-end MAPPO throughput and update time against the card, the card's whole
run timed, and a longer learning run scored on held-out bars.

    python benchmarks/training_speed.py [--learning-updates 80] [--no-distributed]

Card: 19,200 steps in 9 updates, 156.8 ms per update. Target (issue 5): the card's 19,200 steps
in under 60 s on the 2-core reference machine. Everything runs with the packaged config (32 envs
x 64 steps per update, 4 epochs over minibatches of 512, torch_threads 1 per process) on the
packaged synthetic series (100,000 bars, seed 11; the last 20% held out).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

CARD_STEPS = 19_200
CARD_UPDATE_MS = 156.8
TARGET_S = 60.0


def _rank_throughput(config: dict, updates: int, out: str) -> None:
    """One rank of the data-parallel row: train, and rank 0 writes its timing."""
    from training.mappo import TacticalMAPPOTrainer

    trainer = TacticalMAPPOTrainer(config, progress=False, log_metrics=False)
    trainer.train(updates)
    if trainer.dist.is_main:
        Path(out).write_text(json.dumps(trainer.get_performance_stats()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learning-updates", type=int, default=80, help="updates of the learning run (default 80)")
    parser.add_argument("--no-distributed", action="store_true", help="skip the two-rank row")
    args = parser.parse_args()

    from market.synthetic import configured
    from tactical.config import default_config
    from training.distributed import launch
    from training.evaluation import oracle_positions, score_positions
    from training.mappo import TacticalMAPPOTrainer

    tmp = Path(tempfile.mkdtemp(prefix="bench-training-"))
    cfg = default_config().replace(paths={"metrics": str(tmp / "metrics.jsonl")})
    t = cfg.training
    steps_per_update = t.num_envs * t.episode_length
    grad_steps = t.epochs * max(1, steps_per_update // t.minibatch_size)
    card_updates = math.ceil(CARD_STEPS / steps_per_update)

    # 1. the card's run: construction to last update, wall clock
    started = time.perf_counter()
    trainer = TacticalMAPPOTrainer(cfg, progress=False, log_metrics=False)
    trainer.train(card_updates)
    card_s = time.perf_counter() - started
    single = trainer.get_performance_stats()
    rows = [("1 process, 1 thread", 1, single)]

    # 2. data-parallel on this machine's two cores: two ranks, 1 thread each
    if not args.no_distributed:
        out = tmp / "ranks.json"
        launch(2, _rank_throughput, cfg.to_dict(), 5, str(out))
        rows.append(("2 ranks (gloo, 127.0.0.1), 1 thread each", 2, json.loads(out.read_text())))

    print(f"MAPPO training throughput: {steps_per_update:,} env steps per update and rank, {grad_steps} gradient "
          f"steps of {t.minibatch_size} per update")
    print(f"{'setup':<42}{'env steps/s':>12}{'update ms':>11}{'per grad step ms':>18}{'collect ms':>12}"
          f"{'policy fwd ms mean/p99':>24}")
    for name, _ranks, p in rows:
        print(f"{name:<42}{p['steps_per_second']:>12,.0f}{p['update_ms_mean']:>11.0f}"
              f"{p['update_ms_mean'] / grad_steps:>18.1f}{p['collect_ms_mean']:>12.0f}"
              f"{p['inference_ms_mean']:>13.2f} / {p['inference_ms_p99']:<8.2f}")
    if len(rows) == 2:
        print(f"2 ranks vs 1 process: {rows[1][2]['steps_per_second'] / single['steps_per_second']:.2f}x the env "
              f"steps/s (same run, same machine)")
    print(f"card: {CARD_UPDATE_MS} ms per update; here {single['update_ms_mean']:.0f} ms per update "
          f"({single['update_ms_mean'] / CARD_UPDATE_MS:.1f}x the card) and "
          f"{single['update_ms_mean'] / grad_steps:.0f} ms per gradient step "
          f"({single['update_ms_mean'] / grad_steps / CARD_UPDATE_MS:.2f}x the card's update)")
    print()
    print(f"{'target':<58}{'measured':>10}{'goal':>8}{'ok':>5}")
    print(f"{f'card run: {card_updates} updates = {card_updates * steps_per_update:,} steps >= 19,200 (s)':<58}"
          f"{card_s:>10.1f}{'< 60':>8}{'yes' if card_s < TARGET_S else 'NO':>5}")
    print()

    # 3. the learning run, scored on the held-out tail against Hold, random votes and the regime oracle
    regimes = configured(cfg.synthetic).regimes
    trainer = TacticalMAPPOTrainer(cfg, progress=True, log_metrics=False)
    oracle = score_positions(oracle_positions(regimes, trainer.series), trainer.series, cfg)
    curve = []

    def checkpoint(update: int, stats: dict) -> None:
        if update % 10 == 0 or update == args.learning_updates:
            curve.append((update, stats["episode_reward"], trainer.evaluate()["model"].total_reward))

    started = time.perf_counter()
    trainer.train(args.learning_updates, callback=checkpoint)
    learn_s = time.perf_counter() - started
    scores = trainer.evaluate()
    print(f"learning run: {args.learning_updates} updates ({trainer.env_steps:,} env steps) in {learn_s:.0f} s, "
          f"seed {t.seed}; held-out: {scores['model'].bars:,} bars, reward_scale {t.reward_scale:g}, "
          f"cost {t.transaction_cost * 1e4:g} bp per unit of position change")
    print(f"{'update':>7}{'train episode reward':>22}{'held-out reward':>17}")
    for update, episode, held_out in curve:
        print(f"{update:>7}{episode:>+22.3f}{held_out:>+17.1f}")
    print(f"{'policy (held-out)':<34}{'total reward':>13}{'per bar':>10}{'trades':>8}{'long':>7}{'short':>7}")
    for name, score in [*scores.items(), ("oracle (knows the regime)", oracle)]:
        print(f"{name:<34}{score.total_reward:>+13.1f}{score.reward_per_bar:>+10.4f}{score.trades:>8}"
              f"{score.long_share:>7.0%}{score.short_share:>7.0%}")
    model = scores["model"].total_reward
    print(f"model - hold {model - scores['hold'].total_reward:+.1f}, model - random "
          f"{model - scores['random'].total_reward:+.1f}, share of the oracle {model / oracle.total_reward:.0%}")


if __name__ == "__main__":
    main()

"""`tactical demo`: the whole product end to end in a few minutes, on synthetic bars."""

from __future__ import annotations

import argparse

from tactical_engine.commands import (
    CliError,
    add_logging_options,
    logging_arguments,
    require_range,
    setup_command_logging,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run everything end to end: cluster, live training, served decisions, backtest",
                       description="Start the local cluster, train a short MAPPO run on the first 80% of a "
                                   "synthetic series while rolling each candidate that improves on held-out bars "
                                   "out to the running agents (training.publish: every rolls out every one), "
                                   "stream decisions over the held-out last 20% through gRPC, print them with "
                                   "versions and latency, backtest them against buy-and-hold, flat and random, "
                                   "and shut everything down. Uses configs/demo.yaml (a planted trend edge, "
                                   "state under state/demo, free ports) unless --config is given.")
    p.add_argument("--updates", type=int, default=None, help="training updates (overrides training.updates)")
    p.add_argument("--push-every", type=int, default=6, metavar="N",
                   help="judge a candidate every N updates, and publish and roll it out if the publish policy "
                        "says so (default 6)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of the series kept for the backtest (default 0.2)")
    p.add_argument("--config", metavar="YAML", default=None,
                   help="configuration merged over the packaged defaults (default: the packaged configs/demo.yaml)")
    add_logging_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    import time
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from agents.serving.model_store import ModelStore
    from configs import DEMO_CONFIG_PATH
    from market.synthetic import configured
    from tactical.actions import action_label
    from tactical.config import AGENT_NAMES, load_config
    from tactical.progress import progress_bar
    from tactical.rpc import admin_token
    from tactical_engine.backtest import BacktestResult, remote_decisions, score
    from tactical_engine.client import TacticalClient, version_text
    from tactical_engine.launcher import LocalCluster
    from tactical_engine.rollout import rollout

    require_range("--updates", args.updates, 1)
    require_range("--push-every", args.push_every, 1)
    if not 0 < args.holdout < 1:
        raise CliError(f"--holdout must be between 0 and 1, got {args.holdout}")
    config_path = args.config or str(DEMO_CONFIG_PATH)
    cfg = load_config(config_path, {"training": {"updates": args.updates}} if args.updates is not None else None)
    setup_command_logging(args, "demo")
    started = time.perf_counter()

    def step(text: str) -> None:
        print(f"\n[{time.perf_counter() - started:6.1f} s] {text}", flush=True)

    def stamp(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")

    bars = configured(cfg.synthetic).bars
    split = int(len(bars) * (1 - args.holdout))
    until_ms = int(bars.time[split])
    step(f"synthetic market: {len(bars):,} one-minute bars, {stamp(int(bars.time[0]))} to "
         f"{stamp(int(bars.time[-1]))} UTC; training on bars before {stamp(until_ms)}, backtest after")

    step(f"starting the cluster: three agent processes and the coordinator (their logs: {cfg.paths.logs}/)")
    cluster = LocalCluster(cfg, config_path, log_dir=Path(cfg.paths.logs), child_options=logging_arguments(args))
    cluster.start()
    try:
        target = cluster.coordinator.address
        for name, child in zip(AGENT_NAMES, cluster.agents, strict=True):
            print(f"  agent {name:<9} {child.address:<21} pid {child.proc.pid:<7} core {cluster.cores[name]}")
        print(f"  coordinator     {target:<21} pid {cluster.coordinator.proc.pid}")
        token = admin_token(cfg)
        store = ModelStore(cfg.paths.model_store)
        with TacticalClient(target, cfg) as client:
            print(f"  all SERVING; active model version {client.status().active_version}")

        step(f"training {cfg.training.updates} MAPPO updates, judging a candidate every {args.push_every} on "
             f"held-out bars and rolling out the ones the publish policy publishes")
        from training.session import run_session

        def push(version: int) -> None:
            with TacticalClient(target, cfg, admin_token=token) as client:
                result = rollout(client, store, version, cfg, token)
            tqdm.write(f"  rolled out version {version} to the running agents (was {version_text(result.previous)}) in "
                       f"{result.seconds:.2f} s; {result.verdict.describe()}")

        run_session(cfg.to_dict(), until_ms=until_ms, updates=cfg.training.updates, save_every=args.push_every,
                    after_publish=push)

        first, last = split, len(bars) - 2
        step(f"serving decisions over the {last - first + 1:,} held-out bars through gRPC (bars in, features "
             f"computed by the coordinator)")
        need = cfg.features.min_bars
        with TacticalClient(target, cfg) as client:
            for t in range(first, first + 5):
                d = client.decide(bars=bars[t + 1 - need:t + 1], request_id=f"demo-{t}")
                votes = " ".join(f"{v.agent}={action_label(v.action)}" for v in d.votes)
                print(f"  {stamp(int(bars.time[t]))}  {action_label(d.action):<5} confidence {d.confidence:.2f}  "
                      f"version {d.model_version}  {d.latency_ms:.2f} ms  votes: {votes}")
        result = BacktestResult({}, first, last, bars, np.zeros(0))
        with progress_bar(last - first + 1, "  decisions", "bar") as bar:
            # the demo's cluster is its own: these bars are its market (live scores, the shadow, the guard)
            result.positions = remote_decisions(target, cfg, bars, first, last, result, progress=bar.update,
                                                as_live=True)
        lat = np.asarray(result.latencies_ms)
        print(f"  {len(lat):,} decisions, version(s) {dict(result.versions)}, {result.degraded} degraded; latency "
              f"p50 {np.percentile(lat, 50):.2f} ms, p99 {np.percentile(lat, 99):.2f} ms (client, 4 streams)")

        step("backtest of the served decisions (out of sample), transaction cost "
             f"{cfg.training.transaction_cost:g} per unit traded")
        score(result, cfg, seed=0)
        print(f"  {'policy':<14}{'total':>9}{'Sharpe':>8}{'max DD':>8}{'win rate':>9}{'trades':>8}{'exposure':>9}")
        for r in result.reports.values():
            win = f"{r.win_rate:>9.1%}" if np.isfinite(r.win_rate) else f"{'-':>9}"
            print(f"  {r.name:<14}{r.total_return:>9.2%}{r.sharpe:>8.2f}{r.max_drawdown:>8.2%}{win}{r.trades:>8}"
                  f"{r.exposure:>9.1%}")
        trust(target, cfg, store, token, bars)
        with TacticalClient(target, cfg) as client:
            s = client.status()
        print(f"  the coordinator answered {s.decisions:,} decisions ({s.degraded_decisions} degraded), "
              f"audit log {cfg.paths.audit_log}")
    finally:
        step("stopping: coordinator first (drains, flushes the audit log), then the agents")
        cluster.stop()
    step(f"done. Again piece by piece: tactical up --config {config_path}; tactical train --config {config_path} "
         f"--until '{stamp(until_ms)}' --push --target ...; tactical backtest --config {config_path} --synthetic "
         f"--from '{stamp(until_ms)}'")
    return 0


def trust(target: str, cfg, store, token: str, bars) -> None:
    """The gate, a shadow and the guard, on the running cluster: what keeps a bad version from trading."""
    import dataclasses
    import json
    import sqlite3
    import time

    from agents.serving.model_store import CHECKPOINT_FILE
    from market.synthetic import configured
    from tactical_engine import Client
    from tactical_engine.client import TacticalClient
    from tactical_engine.commands.shadow import show
    from tactical_engine.rollout import PromotionRefused, rollout, stage
    from tactical_engine.shadowing import shadow_record
    from training.checkpoint import load_checkpoint
    from training.versions import publish

    need = cfg.features.min_bars

    def feed(instrument: str, seed: int, count: int, until=lambda d: False) -> int:
        """Bars of another stretch of the same market, one at a time; how many until `until` held."""
        series = configured(dataclasses.replace(cfg.synthetic, seed=seed, bars=need + count)).bars
        with Client(target, cfg) as client, client.stream(instrument, series[:need]) as stream:
            for i in range(need, len(series)):
                if until(stream.send(series.bar(i))):
                    return i - need + 1
        return count

    with TacticalClient(target, cfg, admin_token=token) as admin:
        active = admin.status().active_version
        print(f"\n  the gate: version {active} with its Long and Short swapped, rolled out")
        model, _ = load_checkpoint(store.path(active) / CHECKPOINT_FILE)
        bad = publish(store, model.mirrored(), source=f"demo: version {active} with Long and Short swapped")
        try:
            rollout(admin, store, bad, cfg, token)
            print(f"  version {bad} went live: the gate found no difference to refuse it on")
        except PromotionRefused as exc:
            print(f"  {exc}")

        live = admin.status().active_version
        shadow, what = (0, "untrained") if live != 0 else (bad, "the swapped one")  # no training run got live
        print(f"\n  a shadow: version {shadow} ({what}) beside version {live}, on 300 bars of another instrument")
        stage(admin, store, shadow, cfg, token)
        admin.set_shadow(shadow)
        feed("SHADOWED", cfg.synthetic.seed + 1, 300)
        report = admin.shadow()
        show(report, False)
        record = shadow_record(report)
        print(f"  tactical promote would {'activate' if record.passes('better') else 'refuse'} it (gate better)")
        admin.set_shadow(None)

        if not cfg.serving.guard_max_drawdown:
            print("\n  the guard is off in this config (serving.guard_max_drawdown 0): not shown")
            return
        print(f"\n  the guard (serving.guard_max_drawdown {cfg.serving.guard_max_drawdown:.0%}): version {bad} forced "
              f"live, then the market moves on")
        rollout(admin, store, bad, cfg, token, gate="off")
        bars_fed = feed("GUARDED", cfg.synthetic.seed + 2, 2000, until=lambda d: d.version != bad)
        deadline = time.monotonic() + 10
        while admin.status().audit_waiting and time.monotonic() < deadline:
            time.sleep(0.2)
        with sqlite3.connect(cfg.paths.audit_log) as db:
            events = db.execute("SELECT detail FROM events WHERE kind = 'guard-rollback' ORDER BY id").fetchall()
        if events:
            e = json.loads(events[-1][0])
            print(f"  after {bars_fed} bars the guard rolled version {e['version']} back to {e['rolled_back_to']}: "
                  f"{e['check']} {e['value']:.1%} > {e['limit']:.1%} over {e['over']} scored bars (in the log, the "
                  f"audit log's events and tactical_guard_rollbacks_total)")
        else:
            print(f"  the guard did not act within {bars_fed} bars; active version {admin.status().active_version}")

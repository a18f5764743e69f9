"""`tactical train`: MAPPO training that publishes model-store versions, on one process or N ranks."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tactical_engine.commands import (
    CliError,
    add_config_option,
    add_logging_options,
    add_targets_option,
    cluster_admin_token,
    coordinator_targets,
    require_range,
    setup_command_logging,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train the agents with MAPPO and publish model versions",
        description="Train the three agents and the centralized critic with MAPPO on a bar series (synthetic by "
                    "default), showing progress and logging per-update metrics to paths.metrics. Every --save-every "
                    "updates and at the end, the model is a candidate: it is scored on the held-out tail "
                    "(training.holdout_fraction) net of costs, against flat (always Hold) and buy-and-hold, and "
                    "published as a new model-store version (three ONNX artifacts + checkpoint + its score) as "
                    "--publish says. The summary names the best candidate and why, and the skipped ones. Ctrl-C "
                    "stops after the current update and judges it. Data-parallel with --nproc N, or under "
                    "torchrun: torchrun --nproc_per_node N -m tactical_engine train ...",
    )
    add_config_option(p)
    p.add_argument("--data", metavar="FILE",
                   help="train on the bars of this CSV or Parquet file (overrides the synthetic series of "
                        "the config's synthetic: section)")
    p.add_argument("--until", metavar="TIME",
                   help="train only on bars before this time (ISO 8601, e.g. 2024-02-20 or 2024-02-20T12:00Z); "
                        "a backtest --from TIME is then out of sample")
    p.add_argument("--updates", type=int, metavar="N", help="number of updates (overrides training.updates)")
    p.add_argument("--seed", type=int, metavar="S",
                   help="seed of weights, rollouts and sampling (overrides training.seed)")
    p.add_argument("--resume", metavar="CKPT",
                   help="continue from a checkpoint file or a model-store version directory (weights, optimizer, "
                        "value normalizer, update count)")
    p.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="also judge a candidate every N updates, published as --publish says (default 0: only "
                        "at the end)")
    p.add_argument("--store", metavar="DIR", help="model store to publish into (overrides paths.model_store)")
    p.add_argument("--push", action="store_true",
                   help="roll every published version out to a running cluster (stage on its agents, then "
                        "activate), so it follows training live; judges a candidate every update unless "
                        "--save-every says otherwise, and publishes (so pushes) only improvements unless --publish "
                        "every; needs the admin token")
    p.add_argument("--publish", choices=("every", "improved"),
                   help="which candidates to publish (overrides training.publish): every one, or only those whose "
                        "held-out Sharpe ratio beats flat and every earlier candidate of the run (a resumed run: "
                        "and the model it resumed from), so that the last published is the best. Default (auto): "
                        "improved with --push, so nothing worse than what is live goes live, and every without")
    p.add_argument("--early-stop", type=int, metavar="K",
                   help="stop after K candidates in a row without held-out improvement; needs --save-every or "
                        "--push (overrides training.early_stop; default 0: never)")
    add_targets_option(p)
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train data-parallel on N local processes (gloo on 127.0.0.1; default 1)")
    add_logging_options(p)
    p.set_defaults(handler=run)


def _overrides(args: argparse.Namespace) -> dict:
    training: dict = {}
    if args.updates is not None:
        training["updates"] = args.updates
    if args.seed is not None:
        training["seed"] = args.seed
    if args.publish is not None:
        training["publish"] = args.publish
    if args.early_stop is not None:
        training["early_stop"] = args.early_stop
    return {"training": training, **({"paths": {"model_store": args.store}} if args.store else {})}


def reachable(targets: list[str], cfg) -> None:
    """Refuse --push before any training when a coordinator cannot be asked for its status: the run would train
    for nothing it could roll out, and say so only in a warning per version."""
    import grpc

    from tactical_engine.client import TacticalClient

    for target in targets:
        try:
            with TacticalClient(target, cfg, timeout=5.0) as client:
                client.status()
        except grpc.RpcError as exc:
            raise CliError(f"--push: the coordinator at {target} does not answer ({exc.code().name}: "
                           f"{exc.details()}); start the cluster (tactical up) or give --target") from None


def run(args: argparse.Namespace) -> int:
    from tactical.config import load_config

    require_range("--updates", args.updates, 1)
    require_range("--seed", args.seed, 0)
    require_range("--save-every", args.save_every, 0)
    require_range("--nproc", args.nproc, 1)
    require_range("--early-stop", args.early_stop, 0)
    if args.resume and not Path(args.resume).exists():
        raise CliError(f"--resume: no checkpoint at {args.resume}")
    cfg = load_config(args.config, _overrides(args))
    save_every = args.save_every or (1 if args.push else 0)
    if cfg.training.early_stop and not save_every:
        raise CliError(f"early stop after {cfg.training.early_stop} candidates needs candidates along the way: "
                       f"give --save-every N (or --push)")
    setup_command_logging(args, "train")
    if args.data:
        from market.csv_loader import load_bars

        load_bars(args.data)  # fail here with one line, not in every rank
    until_ms = None
    if args.until:
        from market.csv_loader import parse_time_ms

        try:
            until_ms = parse_time_ms(args.until)
        except ValueError as exc:
            raise CliError(f"--until: {exc}") from None
    push = None
    if args.push:
        push = {"targets": coordinator_targets(args.target, cfg), "token": cluster_admin_token(cfg)}
        reachable(push["targets"], cfg)
    options = {"logging": {"level": args.log_level, "fmt": args.log_format},
               "data": args.data, "until_ms": until_ms, "updates": cfg.training.updates, "resume": args.resume,
               "save_every": save_every}
    from training.checkpoint import CheckpointError

    try:
        if args.nproc > 1:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise CliError("--nproc cannot be combined with torchrun: torchrun already started the ranks")
            from torch.multiprocessing import ProcessRaisedException

            from training.distributed import launch

            try:
                launch(args.nproc, _rank_session, cfg.to_dict(), options, push)
            except ProcessRaisedException as exc:
                raise CliError(f"a training rank failed: {str(exc).strip().splitlines()[-1]}") from None
        else:
            from training.distributed import process_group

            with process_group():  # joins a torchrun job when started by torchrun, else a no-op
                _rank_session(cfg.to_dict(), options, push)
    except CheckpointError as exc:
        raise CliError(str(exc)) from None
    return 0


def _rank_session(config: dict, options: dict, push: dict | None) -> None:
    """One rank's session (a top-level function, so spawned ranks can run it; they set up their own logging)."""
    from tactical.logs import setup_logging
    from training.session import run_session

    options = dict(options)
    setup_logging("train", **options.pop("logging"))
    run_session(config, after_publish=_pusher(config, push) if push else None, **options)


def _pusher(config: dict, push: dict):
    """after_publish for --push: roll the new version out; a failure is reported, training goes on."""
    import logging

    import grpc

    from agents.serving.model_store import ModelStore
    from tactical.config import config_from_dict
    from tactical_engine.client import coordinator_clients
    from tactical_engine.rollout import RolloutError, describe, rollout

    cfg = config_from_dict(config)
    store = ModelStore(cfg.paths.model_store)
    log = logging.getLogger("tactical.train")

    where = ", ".join(push["targets"])

    def after_publish(version: int) -> None:
        try:
            with coordinator_clients(push["targets"], cfg, push["token"]) as clients:
                result = rollout(clients, store, version, cfg, push["token"])
            log.info("rolled out version %d to the cluster at %s %s in %.2f s; %s", version, where,
                     describe(result.switch), result.seconds, result.verdict.describe(),
                     extra={"version": version, "rollout_ms": round(result.seconds * 1000, 1),
                            "switch_window_ms": result.switch.window_ms})
        except (RolloutError, grpc.RpcError) as exc:  # a refusal or the cluster being away must not stop training
            detail = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
            log.warning("version %d not rolled out to %s: %s", version, where, detail.splitlines()[0],
                        extra={"version": version})

    return after_publish

"""The `tactical` command line: one entry point, one module per command under tactical_engine/commands.

Command modules import their heavy dependencies (torch, onnxruntime, grpc) inside their
handlers, so `tactical --help` and light commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from tactical import __version__
from tactical.errors import UserError

# Command name -> module under tactical_engine.commands; the order is the order of `tactical --help`.
COMMANDS = ("demo", "up", "health", "status", "decide", "train", "tune", "rollout", "rollback", "shadow", "promote",
            "versions", "backtest", "evaluate", "audit", "replay", "agent", "coordinator", "features")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tactical",
        description="Tactical trading decision engine: three MAPPO-trained agents (fvg, momentum, entry) "
                    "served over gRPC behind one coordinator.",
        epilog="Run `tactical COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"tactical {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"tactical_engine.commands.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"tactical {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tactical {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a path that cannot be written or read (a directory given for a file, no permission)
        where = exc.filename2 if exc.filename2 is not None else exc.filename
        print(f"tactical {args.command}: error: {exc.strerror or exc}" + (f": {where}" if where else ""),
              file=sys.stderr)
        return 2
    except Exception as exc:
        grpc = sys.modules.get("grpc")
        if grpc is not None and isinstance(exc, grpc.RpcError):  # a failed call: its status is the message
            hint = (" (is the cluster running there? `tactical health --target HOST:PORT` checks; `tactical up` "
                    "starts one)" if exc.code() == grpc.StatusCode.UNAVAILABLE else "")
            print(f"tactical {args.command}: error: {exc.code().name}: {exc.details()}{hint}", file=sys.stderr)
            return 2
        raise

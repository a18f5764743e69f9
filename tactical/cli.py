"""The `tactical` command line: one entry point, one module per command under tactical/commands.

Command modules import their heavy dependencies (torch, onnxruntime, grpc) inside their
handlers, so `tactical --help` and light commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tactical import __version__

# Command name -> module under tactical.commands; the order is the order of `tactical --help`.
COMMANDS = ("features", "train", "tune")


class CliError(Exception):
    """An error to report as one readable line with exit code 2."""


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
        importlib.import_module(f"tactical.commands.{name}").add_parser(sub)
    return parser


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """The --config flag every command that reads settings shares."""
    parser.add_argument("--config", metavar="YAML", default=None,
                        help="configuration file, merged over the packaged configs/tactical_marl_v1.yaml "
                             "(default: the packaged file alone)")


def main(argv: Sequence[str] | None = None) -> int:
    from market.bars import BarDataError
    from tactical.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (CliError, ConfigError, BarDataError) as exc:
        print(f"tactical {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tactical {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

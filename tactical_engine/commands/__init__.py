"""One module per `tactical` command; each exposes add_parser(subparsers). Here: what they share.

The options every command spells the same way, and the range checks of numeric flags, so that
every command refuses a bad number alike: one line naming the flag, exit code 2, before any
work starts.
"""

from __future__ import annotations

import argparse
import math

from tactical.config import Config
from tactical.errors import UserError


class CliError(UserError):
    """A bad command line; reported as one readable line with exit code 2."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """The --config flag every command that reads settings shares."""
    parser.add_argument("--config", metavar="YAML", default=None,
                        help="configuration file, merged over the packaged configs/tactical_marl_v1.yaml "
                             "(default: the packaged file alone)")


def add_target_option(parser: argparse.ArgumentParser) -> None:
    """The --target flag of commands that call a running coordinator."""
    parser.add_argument("--target", metavar="HOST:PORT", default=None,
                        help="the coordinator (default: 127.0.0.1 or serving.host, at serving.coordinator_port)")


def add_targets_option(parser: argparse.ArgumentParser) -> None:
    """The repeatable --target of commands that switch versions on every coordinator together."""
    parser.add_argument("--target", metavar="HOST:PORT", action="append", default=None,
                        help="a coordinator; repeat it for several, which are switched together (prepared on "
                             "all, then activated on all, or on none) (default: serving.coordinators, else "
                             "127.0.0.1 or serving.host at serving.coordinator_port)")


def coordinator_targets(targets: list[str] | None, cfg: Config) -> list[str]:
    """Every coordinator a version switch goes to: the --target flags, else serving.coordinators, else the local one."""
    return list(dict.fromkeys(targets or cfg.serving.coordinators or [cfg.serving.local_coordinator]))


def cluster_admin_token(cfg: Config) -> str:
    """The admin token for calls to a cluster, or a CliError saying where to put one."""
    from tactical.rpc import ADMIN_TOKEN_ENV, admin_token

    token = admin_token(cfg)
    if not token:
        raise CliError(f"no admin token: set ${ADMIN_TOKEN_ENV} or serving.admin_token, or run where the cluster "
                       f"keeps {cfg.paths.admin_token_file}")
    return token

def version_number(text: str) -> int:
    """The type of --version flags: a model-store version, as a number (3) or as `tactical versions` prints it (v3)."""
    try:
        return int(text[1:] if text[:1] in ("v", "V") else text)  # a negative one is refused by require_range
    except ValueError:
        raise argparse.ArgumentTypeError(f"a model-store version is a number such as 3 (or v3, as `tactical versions` "
                                         f"prints it), got {text!r}") from None


def require_range(flag: str, value: float | None, minimum: float, maximum: float | None = None) -> None:
    """Refuse a number flag outside [minimum, maximum] (NaN too); None means the flag was not given."""
    if value is None:
        return
    if maximum is None:
        if not value >= minimum:
            raise CliError(f"{flag} must be at least {minimum}, got {value}")
    elif not minimum <= value <= maximum:
        raise CliError(f"{flag} must be between {minimum} and {maximum}, got {value}")


def flags_given(*flags: tuple[str, object]) -> str:
    """"--flag value" for each (flag, value) given, for a message saying what matched nothing."""
    return " ".join(f"{flag} {value}" for flag, value in flags if value)


def refuse_unused_seed(args: argparse.Namespace, *sources: str) -> None:
    """--seed picks the synthetic market: given with another source of bars it would be silently ignored."""
    used = [f"--{source}" for source in sources if getattr(args, source, None)]
    if args.seed is not None and used:
        raise CliError(f"--seed sets the synthetic market's seed; it does nothing with {used[0]}")


def require_seconds(flag: str, value: float | None) -> None:
    """Refuse a duration flag that is not a positive, finite number of seconds (gRPC would time out at once)."""
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise CliError(f"{flag} must be a positive number of seconds, got {value}")


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    """--log-format and --log-level, which every long-running command shares (and passes to its children)."""
    from tactical.logs import LOG_FORMATS, LOG_LEVELS

    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                        help="text: one line per event for people; json: one JSON object per line (time, level, "
                             "process, pid, agent, logger, message, fields) for log collectors (default text)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="least severe level logged "
                                                                              "(default info)")


def setup_command_logging(args: argparse.Namespace, process: str, agent: str | None = None) -> None:
    """Log as the command line asked (add_logging_options)."""
    from tactical.logs import setup_logging

    setup_logging(process, agent=agent, level=args.log_level, fmt=args.log_format)


def logging_arguments(args: argparse.Namespace) -> list[str]:
    """The logging options of this command, for the processes it starts."""
    return ["--log-format", args.log_format, "--log-level", args.log_level]

"""One module per `tactical` command; each exposes add_parser(subparsers).

The range checks of numeric flags live here, shared, so that every command refuses a bad
number the same way: one line naming the flag, exit code 2, before any work starts.
"""

from __future__ import annotations

import math

from tactical.cli import CliError


def require_range(flag: str, value: float | None, minimum: float, maximum: float | None = None) -> None:
    """Refuse a number flag outside [minimum, maximum] (NaN too); None means the flag was not given."""
    if value is None:
        return
    if maximum is None:
        if not value >= minimum:
            raise CliError(f"{flag} must be at least {minimum}, got {value}")
    elif not minimum <= value <= maximum:
        raise CliError(f"{flag} must be between {minimum} and {maximum}, got {value}")


def require_seconds(flag: str, value: float | None) -> None:
    """Refuse a duration flag that is not a positive, finite number of seconds (gRPC would time out at once)."""
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise CliError(f"{flag} must be a positive number of seconds, got {value}")

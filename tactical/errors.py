"""The base of every error that the CLI reports as one readable line (exit code 2) instead of a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad input, a busy port, a missing file); the message says what and where."""

"""Errors a user can fix. The CLI prints their message on one line, without a traceback."""


class WsiCcrlError(Exception):
    """A problem with the user's input or environment (exit code 1)."""


class ConfigError(WsiCcrlError):
    """An invalid config file or option value (exit code 2, like any usage error)."""

"""The error a user's setting raises: out of range, of the wrong kind, or an unknown name.

The command line prints it as one line (the message names the setting and the
value); a notebook gets an ordinary ``ValueError``.
"""


class ConfigError(ValueError):
    """A setting that cannot work; the message names it and the value at fault."""

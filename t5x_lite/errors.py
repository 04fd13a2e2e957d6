"""The error a user's setting raises: out of range, of the wrong kind, or an unknown name.

The command line prints it as one line (the message names the setting and the
value); a notebook gets an ordinary ``ValueError``.
"""

from collections.abc import Mapping


class ConfigError(ValueError):
    """A setting that cannot work; the message names it and the value at fault."""


class ConfigTypeError(ConfigError, TypeError):
    """A setting of the wrong type (a ``TypeError`` too, as Python code expects)."""


def check_types(owner: str, **values: tuple) -> None:
    """``name=(value, kind or kinds)``: gin passes whatever a file says, so name a wrong type before any work.

    Raises ``ConfigTypeError``, a ``TypeError`` (``bool`` is not an ``int`` here; ``Mapping`` reads "a dict").
    """
    for name, (value, kind) in values.items():
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            wanted = " or ".join("None" if k is type(None) else "a dict" if k is Mapping else k.__name__
                                 for k in kinds)
            raise ConfigTypeError(f"{owner}.{name} must be {wanted}, got {value!r} ({type(value).__name__})")


def check_at_least(owner: str, minimum: int, **values) -> None:
    """``ConfigError`` naming the first of ``values`` below ``minimum``."""
    for name, value in values.items():
        if value < minimum:
            raise ConfigError(f"{owner}.{name} must be >= {minimum}, got {value}")

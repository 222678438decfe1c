"""Secrets in the configuration: :class:`Secret` never shows its value."""

from __future__ import annotations

import hmac
from typing import NoReturn, SupportsIndex

__all__ = ["Secret"]


class Secret:
    """A secret string that does not show itself.

    ``repr``/``str`` give ``Secret('***')``/``***``; :meth:`reveal` returns the value
    for the one place that needs it (the SDK call). Comparison with another ``Secret``
    is constant-time; a ``Secret`` never equals a plain ``str``. Pickling is refused so
    a secret cannot leak through a serialized config; ``copy`` returns the same
    (immutable) object.

    CPython cannot wipe strings from memory: this guards against accidental display,
    not against someone who can read the process memory.
    """

    __slots__ = ("_value",)

    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """The secret value. Pass it straight to the SDK; never log it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(_utf8(self._value), _utf8(other._value))

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret cannot be pickled: secrets must not be serialized")

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError("Secret cannot be pickled: secrets must not be serialized")


def _utf8(value: str) -> bytes:
    # surrogatepass: os.environ may carry surrogate-escaped bytes on POSIX.
    return value.encode("utf-8", "surrogatepass")

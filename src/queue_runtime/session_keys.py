"""Session-key strategies: which messages must be handled in order (docs/design.md#session-keys).

Messages with the same session id are handled one at a time, in send order;
different sessions run concurrently. A *strategy* derives the session id from
a message's metadata, a :class:`MessageFields` (the JSON payload and the
attributes). Any callable ``(fields) -> str | None`` is a strategy; ``None``
means "no session": the message may be handled concurrently with any other.

* :class:`SingleField` -- one field, with an optional prefix.
* :class:`CompositeKey` -- several fields joined by a separator; ``None`` if any is missing.
* :class:`Fallback` -- the first strategy that yields an id.
* :class:`NoOrdering` -- always ``None``.
* :class:`queue_runtime.github.GitHubSessions` -- ``owner/repo/pull/42`` and friends.

A field is named by a path: an attribute of exactly that name, else a dotted path
into the payload (``"repository.full_name"``; a number picks a list item,
``"check_run.pull_requests.0.number"``). Strings and integers are usable values; an
empty string, a boolean, a float, ``null``, an object or a list counts as missing.

Derived values always become valid :class:`~queue_runtime.messages.SessionId` s
(:func:`to_session_id`): characters outside printable ASCII are percent-encoded
(UTF-8), and a value longer than 128 characters keeps its first 111 characters
followed by ``~`` and 16 hex digits of its SHA-256. Both are deterministic, so the
same field values always give the same session, and a value that is already valid
is kept as it is. An event is never refused, nor silently unordered, because of
its session id.

Example:
    >>> from queue_runtime.session_keys import (
    ...     CompositeKey, Fallback, MessageFields, NoOrdering, SingleField)
    >>> fields = MessageFields(
    ...     {"repository": {"full_name": "octo/repo"}, "number": 42}, {"tenant": "acme"})
    >>> CompositeKey(("repository.full_name", "number"))(fields)
    'octo/repo/42'
    >>> SingleField("tenant", prefix="tenant-")(fields)
    'tenant-acme'
    >>> Fallback((SingleField("installation.id"), SingleField("repository.full_name")))(fields)
    'octo/repo'
    >>> NoOrdering()(fields) is None
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from queue_runtime.errors import ValidationError
from queue_runtime.messages import MAX_SESSION_ID, SessionId

__all__ = [
    "CompositeKey",
    "Fallback",
    "MessageFields",
    "NoOrdering",
    "SessionKeyStrategy",
    "SingleField",
    "derive_session_id",
    "to_session_id",
]

_HASH_DIGITS = 16
_KEPT = MAX_SESSION_ID - 1 - _HASH_DIGITS


@dataclass(frozen=True, slots=True)
class MessageFields:
    """The metadata a strategy reads: the message's JSON payload and its attributes.

    Example:
        >>> fields = MessageFields({"pull_request": {"number": 7}}, {"event_type": "push"})
        >>> fields.get("pull_request.number"), fields.get("event_type"), fields.get("nope")
        ('7', 'push', None)
    """

    payload: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)

    def get(self, path: str) -> str | None:
        """The value at ``path`` as text, or ``None`` when it is missing or not usable.

        An attribute named exactly ``path`` wins over the payload. Strings and
        integers are usable; empty strings, booleans, floats, ``null``, objects and
        lists are not (they make poor session keys).
        """
        if path in self.attributes:
            return _text(self.attributes[path])
        return _text(self.find(path))

    def has(self, path: str) -> bool:
        """True when ``path`` exists in the attributes or the payload and is not ``null``."""
        return path in self.attributes or self.find(path) is not None

    def find(self, path: str) -> Any:
        """The raw payload value at the dotted ``path`` (``None`` when absent)."""
        node: Any = self.payload
        for part in path.split("."):
            if isinstance(node, Mapping):
                node = node.get(part)
            elif isinstance(node, list) and part.isascii() and part.isdigit():
                index = int(part)
                node = node[index] if index < len(node) else None
            else:
                return None
        return node


SessionKeyStrategy: TypeAlias = Callable[[MessageFields], str | None]
"""Derives a session id from message fields; ``None`` means "no session"."""


def _text(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int):
        return str(value)
    return None


def _printable(char: str) -> str:
    if " " <= char <= "~":
        return char
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def to_session_id(value: str) -> SessionId | None:
    """``value`` made into a valid session id, deterministically; ``None`` when empty.

    Non-printable and non-ASCII characters are percent-encoded (UTF-8); a result
    longer than 128 characters keeps its first 111 characters, then ``~`` and 16 hex
    digits of the SHA-256 of the whole. Valid values are returned unchanged.

    Example:
        >>> to_session_id("octo/repo/pull/1"), to_session_id("refs/heads/fünf")
        ('octo/repo/pull/1', 'refs/heads/f%C3%BCnf')
        >>> len(to_session_id("x" * 500)), to_session_id("") is None
        (128, True)
    """
    if not isinstance(value, str):
        raise ValidationError(
            f"a session key strategy must return str or None, not {type(value).__name__}",
            field="session_id",
        )
    text = "".join(_printable(char) for char in value)
    if len(text) > MAX_SESSION_ID:
        digest = hashlib.sha256(text.encode()).hexdigest()[:_HASH_DIGITS]
        text = f"{text[:_KEPT]}~{digest}"
    return SessionId(text) if text else None


def derive_session_id(strategy: SessionKeyStrategy, fields: MessageFields) -> SessionId | None:
    """Apply ``strategy`` (built-in or custom) and make its answer a valid session id.

    Example:
        >>> derive_session_id(lambda fields: fields.get("tenant"), MessageFields({"tenant": 7}))
        '7'
    """
    value = strategy(fields)
    return None if value is None else to_session_id(value)


def _path(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError("must be a non-empty string", field=name)
    return value


@dataclass(frozen=True, slots=True)
class SingleField:
    """One field, with an optional ``prefix``: ``tenant-acme``.

    Example:
        >>> SingleField("repository.full_name")(MessageFields({"repository": {"full_name": "o/r"}}))
        'o/r'
    """

    path: str
    prefix: str = ""

    def __post_init__(self) -> None:
        _path(self.path, "path")
        if not isinstance(self.prefix, str):
            raise ValidationError("must be a string", field="prefix")

    def __call__(self, fields: MessageFields) -> SessionId | None:
        value = fields.get(self.path)
        return None if value is None else to_session_id(self.prefix + value)


@dataclass(frozen=True, slots=True)
class CompositeKey:
    """Several fields joined by ``separator``; no session when any of them is missing.

    Example:
        >>> key = CompositeKey(("tenant", "order"), separator=":")
        >>> key(MessageFields({"tenant": "acme", "order": 9})), key(MessageFields({"order": 9}))
        ('acme:9', None)
    """

    paths: Sequence[str]
    separator: str = "/"

    def __post_init__(self) -> None:
        if isinstance(self.paths, str) or not isinstance(self.paths, Iterable):
            raise ValidationError("must be a sequence of field paths", field="paths")
        paths = tuple(_path(path, "paths") for path in self.paths)
        if not paths:
            raise ValidationError("must name at least one field", field="paths")
        if not isinstance(self.separator, str):
            raise ValidationError("must be a string", field="separator")
        object.__setattr__(self, "paths", paths)

    def __call__(self, fields: MessageFields) -> SessionId | None:
        values = [fields.get(path) for path in self.paths]
        if any(value is None for value in values):
            return None
        return to_session_id(self.separator.join(value for value in values if value is not None))


@dataclass(frozen=True, slots=True)
class Fallback:
    """The first of ``strategies`` that yields a (non-empty) session id.

    Example:
        >>> chain = Fallback((SingleField("pull"), SingleField("repo")))
        >>> chain(MessageFields({"repo": "o/r"})), chain(MessageFields({}))
        ('o/r', None)
    """

    strategies: Sequence[SessionKeyStrategy]

    def __post_init__(self) -> None:
        if not isinstance(self.strategies, Iterable):
            raise ValidationError("must be a sequence of strategies", field="strategies")
        strategies = tuple(self.strategies)
        if not strategies or not all(callable(strategy) for strategy in strategies):
            raise ValidationError("must be one or more callables", field="strategies")
        object.__setattr__(self, "strategies", strategies)

    def __call__(self, fields: MessageFields) -> SessionId | None:
        for strategy in self.strategies:
            session_id = derive_session_id(strategy, fields)
            if session_id is not None:
                return session_id
        return None


@dataclass(frozen=True, slots=True)
class NoOrdering:
    """Never a session: every message may be handled concurrently with any other.

    Example:
        >>> NoOrdering()(MessageFields({"repository": {"full_name": "o/r"}})) is None
        True
    """

    def __call__(self, fields: MessageFields) -> None:
        return None

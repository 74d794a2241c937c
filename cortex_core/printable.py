"""Text from Redis made safe to draw on an operator's terminal.

A task's query, a model's reply, a worker's name or an API's error message
can hold control characters; drawn as they are, an escape sequence would
reach the operator's terminal and could retitle it, recolour it or worse.
Everything the console is given (the types in :mod:`cortex_core.snapshot`)
passes through :func:`printable` when it is made: each control character
other than newline and tab is shown as a visible symbol instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

_T = TypeVar("_T")

_VISIBLE: dict[int, str] = {
    **{code: chr(0x2400 + code) for code in range(0x20) if code not in (0x09, 0x0A)},
    0x7F: "\u2421",
    **{code: "\ufffd" for code in range(0x80, 0xA0)},
}
"""C0 controls as their Control Pictures symbols, DEL likewise, C1 as U+FFFD."""

_MARK = "__cortex_printable__"


def printable(text: str) -> str:
    """``text`` with every control character but newline and tab made visible."""
    if text.isprintable():
        return text
    return text.translate(_VISIBLE)


def clean(value: Any) -> Any:
    """``value`` with :func:`printable` applied to every string inside it.

    Walks tuples, lists, sets, mappings, dataclasses and pydantic models;
    string enums and instances of classes marked by :func:`printable_fields`
    (already clean when they were made) are left as they are.
    """
    kind = type(value)
    if kind is str:
        return printable(value)
    if value is None or kind in (int, float, bool) or getattr(kind, _MARK, False):
        return value
    if kind in (tuple, list, set, frozenset):
        return kind(clean(item) for item in value)
    if isinstance(value, Mapping):
        return {clean(k): clean(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: clean(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.init
        }
        return dataclasses.replace(value, **changes)
    if isinstance(value, BaseModel):
        names = type(value).model_fields
        return value.model_copy(update={n: clean(getattr(value, n)) for n in names})
    return value


def printable_fields(cls: type[_T]) -> type[_T]:
    """Class decorator for a frozen dataclass: its fields are made printable
    (deeply) when an instance is made."""
    previous: Callable[[Any], None] | None = getattr(cls, "__post_init__", None)

    def __post_init__(self: Any) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            cleaned = clean(value)
            if cleaned is not value:
                object.__setattr__(self, f.name, cleaned)
        if previous is not None:
            previous(self)

    setattr(cls, "__post_init__", __post_init__)  # noqa: B010
    setattr(cls, _MARK, True)
    return cls

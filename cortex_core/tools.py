"""The tools a model may call while it runs a task.

An executor that drives a tool-use conversation is handed a :class:`Toolbox`:
the specs it sends to the model, and one call per tool request. A toolbox
never raises for a bad request or a failed lookup: it answers with an outcome
whose ``is_error`` is set and whose text the model can read and act on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolSpec:
    """One tool as the model is told of it."""

    name: str
    description: str
    input_schema: Mapping[str, Any] = field(default_factory=dict)
    """JSON Schema of the arguments (an ``object``)."""

    def to_api(self) -> dict[str, Any]:
        """The tool in the Messages API's ``tools`` form."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": dict(self.input_schema),
        }


@dataclass(frozen=True)
class ToolOutcome:
    """What one tool call answered, as text for the model."""

    content: str
    is_error: bool = False


class Toolbox(Protocol):
    """A set of read-only tools and the means to call them."""

    def specs(self) -> Sequence[ToolSpec]:
        """The tools, in the order they are offered to the model."""
        ...

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolOutcome:
        """Run one tool; an unknown name or bad arguments is an error outcome."""
        ...


__all__ = ["ToolOutcome", "ToolSpec", "Toolbox"]

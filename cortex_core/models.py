"""The task and result types, serialised the same way everywhere (JSON)."""

from __future__ import annotations

import enum
import re
import secrets
import time
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from cortex_core.errors import TaskValidationError

#: Largest query accepted, bytes of UTF-8.
MAX_QUERY_BYTES = 16_384
MAX_IDEMPOTENCY_KEY_BYTES = 200
MAX_OUTPUT_BYTES = 1_048_576
#: Longest text of one transcript entry, characters; longer text is cut.
MAX_TRANSCRIPT_TEXT = 2_000
MAX_TRANSCRIPT_ENTRIES = 200
_CATEGORY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_TASK_ID_RE = re.compile(r"^[0-9a-f]{24}$")

#: The categories of the reference workload; any short lowercase name is valid.
KNOWN_CATEGORIES = ("development", "security", "infrastructure", "inventory", "cicd")


class Priority(enum.StrEnum):
    """The four levels, highest first; claims take them in this order."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for critical up to 3 for low."""
        return PRIORITIES.index(self)


PRIORITIES: tuple[Priority, ...] = tuple(Priority)


class TaskState(enum.StrEnum):
    """Where a task is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


_M = TypeVar("_M", bound=BaseModel)


def new_task_id() -> str:
    """24 hex digits that sort by creation time: 12 of milliseconds, 12 random."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"


def is_task_id(value: str) -> bool:
    return bool(_TASK_ID_RE.fullmatch(value))


class Task(BaseModel):
    """A unit of work: a question about a cluster, its category and priority."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    id: Annotated[str, Field(default_factory=new_task_id)]
    query: str
    category: str
    priority: Priority
    attempts: Annotated[int, Field(ge=0, le=100)] = 0
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    token_estimate: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    created_at: Annotated[float, Field(default_factory=time.time, ge=0)]
    idempotency_key: str | None = None

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not is_task_id(value):
            raise ValueError("must be 24 lowercase hex digits")
        return value

    @field_validator("query")
    @classmethod
    def _check_query(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_QUERY_BYTES:
            raise ValueError(f"at most {MAX_QUERY_BYTES} bytes of UTF-8, got {size}")
        _require_encodable(value)
        return value

    @field_validator("category")
    @classmethod
    def _check_category(cls, value: str) -> str:
        if not _CATEGORY_RE.fullmatch(value):
            raise ValueError(
                "1 to 32 characters: a lowercase letter, then letters, digits, _ or -"
            )
        return value

    @field_validator("idempotency_key")
    @classmethod
    def _check_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _require_encodable(value)
        size = len(value.encode("utf-8"))
        if not 1 <= size <= MAX_IDEMPOTENCY_KEY_BYTES:
            raise ValueError(f"1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes of UTF-8")
        return value

    def to_json(self) -> bytes:
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> Task:
        """Decode a stored task; raise TaskValidationError saying what is wrong."""
        return _decode(cls, data)

    @classmethod
    def create(cls, **fields: Any) -> Task:
        """Build a task from untrusted input; raise TaskValidationError."""
        try:
            return cls(**fields)
        except ValidationError as err:
            raise TaskValidationError(describe_validation_error(err)) from err


class TranscriptEntry(BaseModel):
    """One step of a model conversation, as the console shows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["user", "assistant", "tool_call", "tool_result", "note"]
    text: Annotated[str, Field(max_length=MAX_TRANSCRIPT_TEXT)] = ""
    """Message text, a tool's arguments as JSON, or a tool's (cut) result."""
    tool: Annotated[str, Field(max_length=128)] = ""
    is_error: bool = False
    at: float = 0.0

    @classmethod
    def cut(cls, kind: str, text: str, **fields: Any) -> TranscriptEntry:
        """An entry whose text is cut to the limit, saying how much was cut."""
        if len(text) > MAX_TRANSCRIPT_TEXT:
            more = len(text) - MAX_TRANSCRIPT_TEXT + 40
            text = text[: MAX_TRANSCRIPT_TEXT - 40] + f" [... {more} more chars]"
        return cls(kind=kind, text=text, at=time.time(), **fields)


class TaskResult(BaseModel):
    """What one execution of a task produced."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str
    ok: bool
    output: str = ""
    error: str | None = None
    model: str
    simulated: bool
    input_tokens: Annotated[int, Field(ge=0)] = 0
    output_tokens: Annotated[int, Field(ge=0)] = 0
    worker: str = ""
    attempt: Annotated[int, Field(ge=0)] = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    cache_creation_tokens: Annotated[int, Field(ge=0)] = 0
    cache_read_tokens: Annotated[int, Field(ge=0)] = 0
    calls: Annotated[int, Field(ge=0)] = 0
    """Model calls made (one per tool round)."""
    stop_reason: str = ""
    """Why the conversation ended: end_turn, max_tool_rounds, token_cap..."""
    waited_seconds: Annotated[float, Field(ge=0)] = 0.0
    """Time spent waiting on the shared budget and the API's limits."""
    cached: bool = False
    """True when the result came from the result cache without a call."""
    transcript: Annotated[
        list[TranscriptEntry], Field(max_length=MAX_TRANSCRIPT_ENTRIES)
    ] = Field(default_factory=list)

    @field_validator("output")
    @classmethod
    def _check_output(cls, value: str) -> str:
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_OUTPUT_BYTES:
            raise ValueError(f"at most {MAX_OUTPUT_BYTES} bytes of UTF-8, got {size}")
        return value

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def seconds(self) -> float:
        return max(0.0, self.finished_at - self.started_at)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> TaskResult:
        return _decode(cls, data)


def describe_validation_error(err: ValidationError) -> str:
    """One line per broken field: ``field: rule``."""
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "task"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _require_encodable(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError("must be valid Unicode (no lone surrogates)") from err


def _decode(model: type[_M], data: bytes | str) -> _M:
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise TaskValidationError(
                f"decode: not UTF-8 at byte {err.start}: {err.reason}"
            ) from err
    else:
        text = data
    try:
        return model.model_validate_json(text)
    except ValidationError as err:
        if any(e["type"] == "json_invalid" for e in err.errors()):
            detail = err.errors()[0]["msg"]
            raise TaskValidationError(f"decode: not JSON: {detail}") from err
        raise TaskValidationError(describe_validation_error(err)) from err

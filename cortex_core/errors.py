"""The exceptions cortex raises across its boundaries."""

from __future__ import annotations


class CortexError(Exception):
    """Base of every error cortex raises on purpose."""


class ConfigError(CortexError):
    """A setting is missing, malformed or out of range."""


class TaskValidationError(CortexError):
    """A task or result failed validation; the message names field and rule."""


class RedisUnavailable(CortexError):
    """Redis could not be reached, refused the credentials, or timed out."""


class UnknownTask(CortexError):
    """No task with that id exists."""


class InvalidTransition(CortexError):
    """The task is not in a state that allows the requested action."""


class EmbeddedRedisError(CortexError):
    """The embedded redis-server could not be found or started."""


class BackendError(CortexError):
    """A worker backend could not start, stop or scale workers."""


class ClusterError(CortexError):
    """A Kubernetes API call failed; the message names verb, resource and RBAC."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class EnqueueRefused(CortexError):
    """Redis refused some tasks of a batch (out of memory, say); ``created``
    holds (id, created) for those it took, ``refused`` the ids it did not."""

    def __init__(
        self, message: str, created: list[tuple[str, bool]], refused: list[str]
    ) -> None:
        super().__init__(message)
        self.created = created
        self.refused = refused


class ReadOnlyMode(CortexError):
    """The console runs read-only: nothing may be changed."""

"""Settings: one validated object, from flags over environment over defaults.

Every field can be set through an environment variable named ``CORTEX_`` plus
the field name in capitals (``CORTEX_REDIS_URL``, ``CORTEX_CONCURRENCY``...).
Command-line flags override the environment; ``Settings.load`` merges both and
validates the result, raising :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cortex_core.errors import ConfigError
from cortex_core.redis_url import SENTINEL_SCHEMES, is_sentinel, parse_sentinel
from cortex_core.targets import parse_targets

#: The most worker processes the local backend runs on one machine.
MAX_LOCAL_WORKERS = 64
ENV_PREFIX = "CORTEX_"
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_REDIS_SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)
EXECUTORS = ("simulated", "claude")
BACKENDS = ("local", "kubernetes")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MODEL_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,100}$")
_CATEGORY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
TOOLSETS = ("cluster", "none")
#: Read when ``CORTEX_ANTHROPIC_API_KEY`` is not set.
FALLBACK_KEY_ENV = "ANTHROPIC_API_KEY"


@dataclass(frozen=True)
class Settings:
    """Everything a cortex process needs to know, validated at start-up."""

    redis_url: str | None = None
    """Redis to use; ``None`` starts the embedded server."""
    namespace: str = "cortex"
    """Hash tag shared by every key, so several deployments can share a Redis."""
    data_dir: Path = Path(".cortex")
    """Embedded Redis data, the audit trail, and worker logs live here."""
    workers: int = 2
    """Worker processes the local backend starts."""
    concurrency: int = 8
    """Tasks one worker process runs at once."""
    lease_seconds: float = 30.0
    """How long a claim lasts without renewal before the task is returned."""
    max_attempts: int = 3
    """Attempts (claims) before a task goes to the dead-letter queue."""
    shutdown_grace_seconds: float = 20.0
    """On SIGTERM a worker finishes running tasks for this long, then hands back."""
    requests_per_minute: int = 0
    """Shared request budget per rolling minute; 0 means unlimited."""
    input_tokens_per_minute: int = 0
    """Shared input-token budget per rolling minute; 0 means unlimited."""
    output_tokens_per_minute: int = 0
    """Shared output-token budget per rolling minute; 0 means unlimited."""
    tokens_per_minute: int = 40_000
    """Shared budget for input plus output tokens per rolling minute; 0: none."""
    executor: str = "simulated"
    """``simulated`` or ``claude``; ``claude`` when an API key is set and this
    is not given."""
    anthropic_api_key: str | None = field(default=None, repr=False)
    """The Claude API key (also read from ``ANTHROPIC_API_KEY``); never shown."""
    anthropic_base_url: str | None = None
    """Messages API address; ``None`` is Anthropic's."""
    model: str = "claude-sonnet-4-5"
    """The model tasks run on."""
    max_tokens: int = 1024
    """Most output tokens of one reply (reserved before each call)."""
    max_tool_rounds: int = 8
    """Model calls one task may make before it stops with what it has."""
    task_token_cap: int = 60_000
    """Tokens (input, cache writes and output) one task may use in all."""
    api_timeout_seconds: float = 120.0
    """Longest wait for one reply."""
    api_max_attempts: int = 6
    """Tries of one model call through 429s, overload and server errors."""
    fallback_model: str | None = None
    """Model to switch a call to when the API says it is overloaded."""
    cheap_model: str | None = None
    """Model for the priorities and categories named in ``cheap_for``."""
    cheap_for: str = ""
    """Comma-separated priorities and categories that run on ``cheap_model``."""
    held_share: float = 0.2
    """Share of each limit only critical and high tasks may use."""
    rate_window_seconds: float = 60.0
    """Length of the limiter's rolling window (the API's is a minute)."""
    result_cache_seconds: float = 0.0
    """Reuse a result of the same query, category, model and tools this long."""
    sim_latency_min: float = 3.0
    """Simulated model: shortest reply, seconds."""
    sim_latency_max: float = 5.0
    """Simulated model: longest reply, seconds."""
    sim_crash_marker: str = ""
    """Testing only: the simulated model ends its worker process (exit code
    70) on a query containing this text, to exercise crash handling; empty,
    the default, never."""
    event_stream_length: int = 10_000
    """Approximate length the task event stream is capped at."""
    log_level: str = "INFO"
    """Level for the process's own log."""
    backend: str = "local"
    """Who runs the workers: ``local`` processes or a ``kubernetes`` Deployment."""
    kubeconfig: Path | None = None
    """Kubeconfig file; None: ``KUBECONFIG``, ``~/.kube/config``, else in-cluster."""
    kube_context: str | None = None
    """Kubeconfig context; None: the current one."""
    kube_namespace: str | None = None
    """Namespace of the worker Deployment; None: the context's, else ``default``."""
    worker_deployment: str = "cortex-worker"
    """Name of the worker Deployment the kubernetes backend reads and scales."""
    kube_timeout_seconds: float = 10.0
    """Longest wait for one Kubernetes API call."""
    metrics_port: int = 0
    """Worker port for /healthz, /readyz and /metrics; 0: none."""
    metrics_host: str = "127.0.0.1"
    """Address the worker's probe port listens on (``0.0.0.0`` in a pod)."""
    tool_namespaces: str = ""
    """Namespaces the cluster tools may read, comma-separated; ``*`` for all;
    empty: only the worker Deployment's namespace."""
    aging_seconds: float = 0.0
    """A task waiting this long is claimed as if one level higher (0: off)."""
    read_only: bool = False
    """The console shows everything and changes nothing."""
    alert_queue_age_seconds: float = 300.0
    """The console alerts when a queue's oldest task has waited this long."""
    targets: str = ""
    """Other deployments ``:target`` switches to: ``name=URL[#namespace]``."""
    tools: str = "cluster"
    """Tools the Claude executor offers: ``cluster`` (read-only Kubernetes) or
    ``none`` (the model answers from the query alone)."""

    # Derived paths -------------------------------------------------------

    @property
    def audit_dir(self) -> Path:
        """One trail per namespace: verify and restore read only their own."""
        return self.data_dir / "audit" / self.namespace

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def embedded(self) -> bool:
        return self.redis_url is None

    @property
    def simulated(self) -> bool:
        return self.executor == "simulated"

    # Construction --------------------------------------------------------

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Merge defaults, ``CORTEX_*`` variables and ``overrides`` (flags).

        ``None`` values in ``overrides`` mean "not given" and do not override.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        known = {f.name: f for f in fields(cls)}
        for name, f in known.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = _coerce(name, f.type, raw)
        for name, value in (overrides or {}).items():
            if name not in known:
                raise ConfigError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = _coerce(name, known[name].type, value)
        if not values.get("anthropic_api_key") and env.get(FALLBACK_KEY_ENV):
            values["anthropic_api_key"] = env[FALLBACK_KEY_ENV]
        if "executor" not in values and values.get("anthropic_api_key"):
            values["executor"] = "claude"
        settings = cls(**values)
        settings.validate()
        return settings

    def prepare_data_dir(self) -> None:
        """Create the data folder, or raise ConfigError saying why it can't be."""
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ConfigError(f"data_dir: {self.data_dir} exists and is not a folder")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"data_dir: cannot create {self.data_dir}: {err.strerror or err}"
            ) from err

    def replace(self, **changes: Any) -> Settings:
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        """Raise ConfigError naming the first field that breaks its rule."""
        if self.redis_url is not None:
            scheme = urlsplit(self.redis_url).scheme
            if scheme not in _REDIS_SCHEMES:
                raise ConfigError(
                    f"redis_url: scheme must be one of {', '.join(_REDIS_SCHEMES)},"
                    f" got {scheme or 'none'!r}"
                )
            if is_sentinel(self.redis_url):
                parse_sentinel(self.redis_url)
        parse_targets(self.targets)
        if not _NAMESPACE_RE.fullmatch(self.namespace) or not self.namespace.strip("."):
            raise ConfigError(
                "namespace: 1 to 64 characters of letters, digits, _ . : -, "
                "not dots alone"
            )
        _require(self.workers, "workers", 0, MAX_LOCAL_WORKERS)
        _require(self.concurrency, "concurrency", 1, 1024)
        _require(self.max_attempts, "max_attempts", 1, 100)
        _require(self.lease_seconds, "lease_seconds", 1.0, 3600.0)
        _require(self.shutdown_grace_seconds, "shutdown_grace_seconds", 0.0, 3600.0)
        for name in (
            "requests_per_minute",
            "input_tokens_per_minute",
            "output_tokens_per_minute",
            "tokens_per_minute",
        ):
            _require(getattr(self, name), name, 0, 1_000_000_000)
        if self.executor not in EXECUTORS:
            raise ConfigError(
                f"executor: one of {', '.join(EXECUTORS)}, got {self.executor!r}"
            )
        if self.executor == "claude" and not self.anthropic_api_key:
            raise ConfigError(
                "executor: claude needs an API key (CORTEX_ANTHROPIC_API_KEY or "
                "ANTHROPIC_API_KEY)"
            )
        self._validate_claude()
        self._validate_tools()
        _require(self.sim_latency_min, "sim_latency_min", 0.0, 600.0)
        _require(self.sim_latency_max, "sim_latency_max", 0.0, 600.0)
        if self.sim_latency_max < self.sim_latency_min:
            raise ConfigError("sim_latency_max: must not be below sim_latency_min")
        if self.sim_crash_marker and not self.simulated:
            raise ConfigError("sim_crash_marker: only with the simulated executor")
        _require(self.event_stream_length, "event_stream_length", 100, 10_000_000)
        _require(self.aging_seconds, "aging_seconds", 0.0, 86_400.0)
        _require(self.alert_queue_age_seconds, "alert_queue_age_seconds", 1.0, 86_400.0)
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("log_level: one of DEBUG, INFO, WARNING, ERROR")
        self._validate_kubernetes()

    def _validate_kubernetes(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"backend: one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.kube_namespace is not None and not _DNS_LABEL_RE.fullmatch(
            self.kube_namespace
        ):
            raise ConfigError(
                "kube_namespace: a DNS label (lowercase letters, digits, '-'), "
                f"got {self.kube_namespace!r}"
            )
        if not _DNS_LABEL_RE.fullmatch(self.worker_deployment):
            raise ConfigError(
                "worker_deployment: a DNS label (lowercase letters, digits, '-'), "
                f"got {self.worker_deployment!r}"
            )
        _require(self.kube_timeout_seconds, "kube_timeout_seconds", 0.1, 300.0)
        _require(self.metrics_port, "metrics_port", 0, 65535)
        for ns in self.tool_namespace_list(default=""):
            if ns != "*" and not _DNS_LABEL_RE.fullmatch(ns):
                raise ConfigError(
                    f"tool_namespaces: {ns!r} is not a namespace name (or '*')"
                )

    def tool_namespace_list(self, *, default: str) -> tuple[str, ...]:
        """The namespaces the cluster tools may read; ``default`` if none set."""
        names = [n.strip() for n in self.tool_namespaces.split(",") if n.strip()]
        if not names and default:
            names = [default]
        return tuple(names)

    def _validate_tools(self) -> None:
        if self.tools not in TOOLSETS:
            raise ConfigError(
                f"tools: one of {', '.join(TOOLSETS)}, got {self.tools!r}"
            )

    def _validate_claude(self) -> None:
        if self.anthropic_base_url is not None:
            scheme = urlsplit(self.anthropic_base_url).scheme
            if scheme not in ("http", "https"):
                raise ConfigError("anthropic_base_url: an http:// or https:// URL")
        for name in ("model", "fallback_model", "cheap_model"):
            value = getattr(self, name)
            if value is not None and not _MODEL_RE.fullmatch(value):
                raise ConfigError(
                    f"{name}: 1 to 100 letters, digits, . _ : - @, got {value!r}"
                )
        if self.cheap_for and self.cheap_model is None:
            raise ConfigError("cheap_for: needs cheap_model")
        for item in self.cheap_for_set:
            if not _CATEGORY_RE.fullmatch(item):
                raise ConfigError(f"cheap_for: priorities or categories, got {item!r}")
        _require(self.max_tokens, "max_tokens", 1, 128_000)
        _require(self.max_tool_rounds, "max_tool_rounds", 1, 100)
        _require(self.task_token_cap, "task_token_cap", 1, 10_000_000)
        _require(self.api_timeout_seconds, "api_timeout_seconds", 1.0, 3600.0)
        _require(self.api_max_attempts, "api_max_attempts", 1, 100)
        _require(self.held_share, "held_share", 0.0, 0.9)
        _require(self.rate_window_seconds, "rate_window_seconds", 1.0, 3600.0)
        _require(self.result_cache_seconds, "result_cache_seconds", 0.0, 604_800.0)

    @property
    def cheap_for_set(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.cheap_for.split(",") if p.strip())

    def redis_display(self) -> str:
        """The Redis target as it may be shown: never with its password."""
        if self.redis_url is None:
            return "embedded"
        return redact_url(self.redis_url)

    def to_env(self) -> dict[str, str]:
        """The settings as CORTEX_* variables, to hand to a child process."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                env[ENV_PREFIX + f.name.upper()] = str(value)
        return env


def redact_url(url: str) -> str:
    """Drop the credentials, query and fragment from a URL so that it can be
    logged or shown. Works on URLs whose password has unescaped ``#/?@``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return urlsplit(url).scheme + ":"
    # The credentials end at the last "@" (passwords may contain "@" too).
    rest = rest.rpartition("@")[2].split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}://{rest}"


def parse_latency(text: str) -> tuple[float, float]:
    """Parse ``MIN:MAX`` seconds as given to ``--latency``."""
    lo_text, sep, hi_text = text.partition(":")
    try:
        lo = float(lo_text)
        hi = float(hi_text) if sep else lo
    except ValueError as err:
        raise ConfigError(
            f"latency: expected MIN:MAX in seconds, like 3:5, got {text!r}"
        ) from err
    if lo < 0 or hi < lo:
        raise ConfigError(f"latency: need 0 <= MIN <= MAX, got {text!r}")
    return lo, hi


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _require(value: float, name: str, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{name}: must be between {lo:g} and {hi:g}, got {value!r}")


def _coerce(name: str, annotation: Any, raw: Any) -> Any:
    text_type = str(annotation)
    try:
        if "Path" in text_type:
            return Path(raw)
        if text_type == "int":
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if text_type == "float":
            return float(raw)
        if text_type == "bool":
            return _boolean(raw)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name}: expected {text_type}, got {raw!r}") from err
    return None if raw is None else str(raw)


__all__ = ["Settings", "parse_latency", "redact_url"]

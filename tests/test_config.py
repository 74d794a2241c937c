"""Settings: precedence of flags, environment and defaults; validation; redaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cortex_core.config import Settings, parse_latency, redact_url
from cortex_core.errors import ConfigError

PASSWORD = "Hunter2Secret"


def test_defaults_without_flags_or_environment() -> None:
    """With nothing given, every field has its documented default."""
    settings = Settings.load({}, environ={})
    assert settings == Settings()
    assert settings.embedded
    assert settings.redis_display() == "embedded"


def test_flags_over_environment_over_defaults() -> None:
    """A flag beats the environment, which beats the default."""
    environ = {
        "CORTEX_WORKERS": "3",
        "CORTEX_CONCURRENCY": "4",
        "CORTEX_LEASE_SECONDS": "12.5",
        "CORTEX_DATA_DIR": "/tmp/cortex-env",
    }
    settings = Settings.load({"workers": 5, "concurrency": None}, environ=environ)
    assert settings.workers == 5
    assert settings.concurrency == 4
    assert settings.lease_seconds == 12.5
    assert settings.data_dir == Path("/tmp/cortex-env")
    assert settings.max_attempts == Settings().max_attempts


def test_empty_environment_value_means_unset() -> None:
    """An empty CORTEX_* variable leaves the default in place."""
    settings = Settings.load({}, environ={"CORTEX_WORKERS": "", "CORTEX_NAMESPACE": ""})
    assert settings.workers == Settings().workers
    assert settings.namespace == Settings().namespace


def test_to_env_round_trips_through_load() -> None:
    """Settings handed to a child as CORTEX_* variables load back equal."""
    settings = Settings.load(
        {"redis_url": "redis://127.0.0.1:7000/1", "workers": 7, "namespace": "ns.a"},
        environ={},
    )
    assert Settings.load({}, environ=settings.to_env()) == settings


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"redis_url": "http://127.0.0.1:6380"}, "redis_url"),
        ({"redis_url": "127.0.0.1:6380"}, "redis_url"),
        ({"redis_url": "localhost"}, "redis_url"),
        ({"namespace": ""}, "namespace"),
        ({"namespace": "has space"}, "namespace"),
        ({"namespace": "a{b}"}, "namespace"),
        ({"namespace": ".."}, "namespace"),
        ({"namespace": "x" * 65}, "namespace"),
        ({"workers": -1}, "workers"),
        ({"workers": 257}, "workers"),
        ({"workers": "many"}, "workers"),
        ({"workers": True}, "workers"),
        ({"concurrency": 0}, "concurrency"),
        ({"lease_seconds": 0.5}, "lease_seconds"),
        ({"lease_seconds": "soon"}, "lease_seconds"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"tokens_per_minute": -1}, "tokens_per_minute"),
        ({"executor": "claude"}, "executor"),
        ({"sim_latency_min": 5, "sim_latency_max": 3}, "sim_latency_max"),
        ({"sim_latency_min": float("nan")}, "sim_latency_min"),
        ({"event_stream_length": 10}, "event_stream_length"),
        ({"log_level": "LOUD"}, "log_level"),
    ],
)
def test_bad_flag_value_names_the_field(overrides: dict[str, Any], field: str) -> None:
    """Every bad value raises ConfigError whose message starts with the field."""
    with pytest.raises(ConfigError) as info:
        Settings.load(overrides, environ={})
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("CORTEX_REDIS_URL", "ftp://127.0.0.1", "redis_url"),
        ("CORTEX_NAMESPACE", "bad/ns", "namespace"),
        ("CORTEX_WORKERS", "two", "workers"),
        ("CORTEX_WORKERS", "1000", "workers"),
        ("CORTEX_SIM_LATENCY_MAX", "x", "sim_latency_max"),
    ],
)
def test_bad_environment_value_names_the_field(
    name: str, value: str, field: str
) -> None:
    """A bad CORTEX_* variable is reported under its field name."""
    with pytest.raises(ConfigError) as info:
        Settings.load({}, environ={name: value})
    assert str(info.value).startswith(f"{field}: ")


def test_namespace_with_trailing_newline_is_refused() -> None:
    """A namespace is letters, digits and _.:- only; a trailing newline is not."""
    with pytest.raises(ConfigError, match=r"^namespace: "):
        Settings.load({"namespace": "cortex\n"}, environ={})


def test_unknown_flag_is_named() -> None:
    """An override that is no setting raises ConfigError naming it."""
    with pytest.raises(ConfigError, match="'wokers'"):
        Settings.load({"wokers": 3}, environ={})


def test_replace_validates() -> None:
    """Settings.replace checks the new values like load does."""
    with pytest.raises(ConfigError, match=r"^workers: "):
        Settings().replace(workers=-5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3:5", (3.0, 5.0)), ("0.5", (0.5, 0.5)), ("0:0", (0.0, 0.0))],
)
def test_parse_latency_accepts_min_max(
    text: str, expected: tuple[float, float]
) -> None:
    """``MIN:MAX`` (or one number for both) parses to seconds."""
    assert parse_latency(text) == expected


@pytest.mark.parametrize("text", ["", "3-5", "a:b", "3:", ":5", "5:3", "-1:2"])
def test_parse_latency_bad_value_names_latency(text: str) -> None:
    """A malformed or inverted latency raises ConfigError naming latency."""
    with pytest.raises(ConfigError) as info:
        parse_latency(text)
    assert str(info.value).startswith("latency: ")


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@127.0.0.1:6380/0",
        f"redis://default:{PASSWORD}@127.0.0.1:6380/0",
        f"rediss://admin:{PASSWORD}@cache.internal:6380",
        f"redis://:{PASSWORD}%40x@127.0.0.1:6380/2",
        f"redis://{PASSWORD}@127.0.0.1:6380/0",
        f"unix:///run/redis.sock?password={PASSWORD}&db=0",
        f"redis://127.0.0.1:6380/0?password={PASSWORD}",
        f"redis://:{PASSWORD}@127.0.0.1:6380/0#{PASSWORD}",
    ],
)
def test_redact_url_never_keeps_the_password(url: str) -> None:
    """redact_url drops the password wherever the URL carries it."""
    shown = redact_url(url)
    assert PASSWORD not in shown
    assert "@" not in shown


@pytest.mark.parametrize("special", ["#", "/", "?"])
def test_redact_url_with_unescaped_special_in_password(special: str) -> None:
    """A password with an unescaped # / or ? is dropped, not raised or half shown."""
    url = f"redis://:Ab{special}Cd@127.0.0.1:6380/0"
    shown = redact_url(url)
    assert "Ab" not in shown
    assert "Cd" not in shown


def test_redact_url_keeps_host_port_and_database() -> None:
    """The redacted URL still says which server and database it names."""
    shown = redact_url(f"rediss://user:{PASSWORD}@Cache.Internal:6390/3")
    assert shown.startswith("rediss://")
    assert "6390" in shown
    assert shown.endswith("/3")
    assert "cache.internal" in shown.lower()


def test_redact_url_keeps_ipv6_brackets() -> None:
    """An IPv6 host keeps its brackets, so the shown URL stays valid."""
    assert redact_url(f"redis://:{PASSWORD}@[::1]:6380/0") == "redis://[::1]:6380/0"


def test_redis_display_hides_the_password() -> None:
    """Settings.redis_display shows the target without its password."""
    settings = Settings.load(
        {"redis_url": f"redis://:{PASSWORD}@127.0.0.1:6380/0"}, environ={}
    )
    shown = settings.redis_display()
    assert PASSWORD not in shown
    assert "127.0.0.1:6380" in shown
    assert PASSWORD not in repr(settings.redis_display())


def test_redis_display_of_test_server_hides_its_password(redis_url: str) -> None:
    """The real embedded server's URL (which carries a password) is redacted."""
    password = redis_url.split("://", 1)[1].rpartition("@")[0].rpartition(":")[2]
    assert password
    shown = Settings.load({"redis_url": redis_url}, environ={}).redis_display()
    assert password not in shown

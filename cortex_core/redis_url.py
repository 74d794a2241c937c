"""Sentinel URLs: a highly available Redis named by its Sentinels.

``redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]``
reaches the master that the Sentinels name ``MASTER``; ``rediss+sentinel://``
does the same over TLS to the master. The password is the master's; a
``sentinel_password`` query parameter authenticates to the Sentinels when they
ask for one. Plain ``redis://``, ``rediss://`` and ``unix://`` URLs go to
redis-py as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from cortex_core.errors import ConfigError

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelTarget:
    """What a Sentinel URL names."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls: bool = False


def is_sentinel(url: str) -> bool:
    return url.partition("://")[0] in SENTINEL_SCHEMES


def parse_sentinel(url: str) -> SentinelTarget:
    """The Sentinels, master name and credentials of a Sentinel URL; raise
    ConfigError naming what is wrong (never the password)."""
    scheme, sep, rest = url.partition("://")
    if scheme not in SENTINEL_SCHEMES or not sep:
        raise ConfigError(
            f"redis_url: a Sentinel URL starts with {' or '.join(SENTINEL_SCHEMES)}"
        )
    rest, _, query = rest.partition("?")
    creds, at, hosts_path = rest.rpartition("@")
    if not at:
        creds, hosts_path = "", rest
    hosts, slash, path = hosts_path.partition("/")
    username = password = None
    if creds:
        user, colon, pw = creds.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
        if not colon:  # "PASSWORD@" alone, as redis:// allows it too.
            username, password = None, unquote(user)
    sentinels: list[tuple[str, int]] = []
    for part in hosts.split(","):
        host, colon, port_text = part.strip().rpartition(":")
        if not colon:
            host, port_text = port_text, str(DEFAULT_SENTINEL_PORT)
        if not host:
            raise ConfigError(
                "redis_url: each Sentinel is HOST:PORT, separated by commas"
            )
        try:
            port = int(port_text)
        except ValueError:
            port = -1
        if not 0 < port < 65536:
            raise ConfigError(f"redis_url: Sentinel {host!r} has a bad port")
        sentinels.append((host.strip("[]"), port))
    segments = [s for s in path.split("/") if s] if slash else []
    if not segments:
        raise ConfigError(
            "redis_url: a Sentinel URL names the master after the hosts, "
            "like redis+sentinel://sentinel-0:26379/mymaster"
        )
    if len(segments) > 2:
        raise ConfigError("redis_url: after the hosts, only /MASTER or /MASTER/DB")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ConfigError(
                f"redis_url: database must be a number, got {segments[1]!r}"
            )
        db = int(segments[1])
    params = parse_qs(query)
    unknown = sorted(set(params) - {"sentinel_password"})
    if unknown:
        raise ConfigError(
            f"redis_url: unknown Sentinel URL parameter {unknown[0]!r} "
            "(only sentinel_password)"
        )
    sentinel_password = params.get("sentinel_password", [None])[0]
    return SentinelTarget(
        sentinels=tuple(sentinels),
        master=unquote(segments[0]),
        db=db,
        username=username,
        password=password,
        sentinel_password=sentinel_password,
        tls=scheme.startswith("rediss"),
    )

"""Opening Redis connections with bounded waits, and reading its clock."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AuthenticationError,
    ResponseError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from cortex_core.config import redact_url
from cortex_core.errors import RedisUnavailable
from cortex_core.redis_url import is_sentinel, parse_sentinel

logger = logging.getLogger(__name__)

#: Socket timeout for ordinary commands; blocking pops pass their own.
COMMAND_TIMEOUT = 5.0
CONNECT_TIMEOUT = 3.0


def connect(url: str, *, name: str = "cortex") -> aioredis.Redis:
    """A client for ``url`` that returns bytes and bounds every wait.

    ``redis://``, ``rediss://`` (TLS) and ``unix://`` go to redis-py as they
    are; a Sentinel URL (see :mod:`cortex_core.redis_url`) gives a client of
    the master the Sentinels name, found again after a failover.
    """
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_timeout": COMMAND_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": 15,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 2),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "client_name": name,
    }
    if is_sentinel(url):
        return _sentinel_master(url, options)
    return aioredis.Redis.from_url(url, **options)


class _SentinelMaster(aioredis.Redis):
    """A master client that closes its Sentinel connections with its own."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for client in getattr(manager, "sentinels", ()):
            await client.aclose()


def _sentinel_master(url: str, options: dict[str, Any]) -> aioredis.Redis:
    target = parse_sentinel(url)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": CONNECT_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
    }
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    logger.info(
        "redis: master %s through %d sentinel(s)",
        target.master,
        len(target.sentinels),
    )
    options.pop("health_check_interval")
    master: aioredis.Redis = sentinel.master_for(
        target.master,
        redis_class=_SentinelMaster,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        **options,
    )
    return master


async def check(client: aioredis.Redis, url: str) -> dict[str, str]:
    """Ping Redis and return its eviction policy and version.

    Raises RedisUnavailable with a message that names the target (without
    its password) and what went wrong.
    """
    target = redact_url(url)
    parts = urlsplit(url)
    try:
        await client.ping()
        info = await client.info("server")
    except AuthenticationError as err:
        if parts.password or "password=" in parts.query:
            raise RedisUnavailable(
                f"{target}: authentication failed (the password or user was refused)"
            ) from err
        raise RedisUnavailable(
            f"{target}: authentication failed: the server wants a password and "
            "the URL gives none (redis://:PASSWORD@host:port/db)"
        ) from err
    except (RedisConnectionError, RedisTimeoutError, OSError) as err:
        raise RedisUnavailable(
            f"{target}: unreachable ({err}){_tls_hint(parts.scheme, err)}"
        ) from err
    except ResponseError as err:
        raise RedisUnavailable(f"{target}: {err}") from err
    policy = "unknown"
    try:
        raw: dict[Any, Any] = await client.config_get("maxmemory-policy")
        value = raw.get(b"maxmemory-policy", raw.get("maxmemory-policy"))
        policy = _text(value) if value is not None else "unknown"
    except ResponseError:
        # Managed services often forbid CONFIG; the policy stays "unknown".
        pass
    version = _text(info.get("redis_version", "unknown"))
    if policy not in ("noeviction", "unknown"):
        logger.warning(
            "Redis %s evicts keys (maxmemory-policy %s): queued tasks can be "
            "lost under memory pressure; set maxmemory-policy noeviction",
            target,
            policy,
        )
    return {"maxmemory_policy": policy, "version": version}


def _tls_hint(scheme: str, err: BaseException) -> str:
    """A hint when the failure looks like TLS on one side only."""
    text = str(err).lower()
    if scheme == "redis" and ("reset by peer" in text or "closed by server" in text):
        return "; if the server requires TLS, use a rediss:// URL"
    if scheme == "rediss" and ("timeout" in text or "ssl" in text or "eof" in text):
        return "; if the server does not speak TLS, use a redis:// URL"
    return ""


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)

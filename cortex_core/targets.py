"""Other deployments the console can watch without a restart (``:target``).

The ``targets`` setting lists them as ``name=URL`` words, separated by spaces
or commas; a URL may end in ``#namespace`` to watch another key namespace,
for example ``prod=rediss://:secret@prod.example:6380/0#cortex``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cortex_core.errors import ConfigError
from cortex_core.redis_url import SENTINEL_SCHEMES

if TYPE_CHECKING:
    from cortex_core.config import Settings
    from cortex_core.snapshot import Control

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)


@dataclass(frozen=True)
class Target:
    """One deployment: its Redis and, if not the console's own, its namespace."""

    name: str
    redis_url: str
    namespace: str | None = None


def parse_targets(text: str) -> dict[str, Target]:
    """Read the ``targets`` setting; raise ConfigError naming the bad entry."""
    found: dict[str, Target] = {}
    for word in text.replace(",", " ").split():
        name, sep, url = word.partition("=")
        if not sep or not _NAME_RE.fullmatch(name):
            raise ConfigError(
                f"targets: {word.split('=')[0]!r} is not name=URL with a name of "
                "1 to 32 letters, digits, _ . -"
            )
        if name in found:
            raise ConfigError(f"targets: {name!r} is listed twice")
        url, hash_sign, namespace = url.partition("#")
        if urlsplit(url).scheme not in _SCHEMES:
            raise ConfigError(
                f"targets: {name}: the URL scheme must be one of {', '.join(_SCHEMES)}"
            )
        if hash_sign and not namespace:
            raise ConfigError(f"targets: {name}: nothing after '#'")
        found[name] = Target(name, url, namespace or None)
    return found


@contextlib.asynccontextmanager
async def open_target(settings: Settings, target: Target) -> AsyncIterator[Control]:
    """A control over ``target`` that starts no workers; closed on exit."""
    from cortex_core.system import System

    chosen = settings.replace(
        redis_url=target.redis_url,
        namespace=target.namespace or settings.namespace,
    )
    async with System.open(chosen, start_workers=False) as system:
        yield system.control

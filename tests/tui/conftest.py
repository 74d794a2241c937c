"""Fixtures that make every console test deterministic.

The machine's time zone is set to one nobody uses by accident (+05:45), and
every app shows times in UTC, so a test that passes here passes anywhere.
Snapshot tests also fix the terminal size and never let the refresh timer
fire on its own: refreshes happen when the test asks for them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC

import pytest

from cortex_tui.app import CortexApp

from .fixtures import FixedControl

NEVER = 3600.0
"""A refresh period no test lasts: refreshes only happen when a test asks."""


@pytest.fixture(autouse=True)
def foreign_local_zone() -> Iterator[None]:
    """Run every test with a local zone that differs from UTC by 5h45m."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kathmandu"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture
def control() -> FixedControl:
    return FixedControl()


@pytest.fixture
def app(control: FixedControl) -> CortexApp:
    return CortexApp(control, refresh_seconds=NEVER, tz=UTC)

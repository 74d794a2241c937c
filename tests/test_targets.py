"""The ``targets`` setting and opening a control over another deployment."""

from __future__ import annotations

import pytest

from cortex_core.config import Settings
from cortex_core.errors import ConfigError
from cortex_core.models import Priority, Task
from cortex_core.system import Services
from cortex_core.targets import Target, open_target, parse_targets


def test_targets_parse_names_urls_and_namespaces() -> None:
    found = parse_targets("prod=rediss://:pw@prod:6380/0#cortex, dev=redis://dev/1")
    assert found == {
        "prod": Target("prod", "rediss://:pw@prod:6380/0", "cortex"),
        "dev": Target("dev", "redis://dev/1", None),
    }
    assert parse_targets("") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prod", "targets: 'prod' is not name=URL"),
        ("a b=redis://x", "targets: 'a' is not name=URL"),
        ("p=http://x", "targets: p: the URL scheme must be one of"),
        ("p=redis://x#", "targets: p: nothing after '#'"),
        ("p=redis://x p=redis://y", "targets: 'p' is listed twice"),
    ],
)
def test_a_bad_target_is_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_targets(text)
    assert str(raised.value).startswith(message)
    with pytest.raises(ConfigError) as raised:
        Settings.load({"targets": text}, environ={})
    assert str(raised.value).startswith(message)


async def test_open_target_watches_another_namespace(
    settings: Settings, services: Services, redis_url: str
) -> None:
    task = Task(query="Count the nodes.", category="inventory", priority=Priority.LOW)
    await services.queue.enqueue(task)
    other = settings.replace(namespace=settings.namespace + "-other")
    target = Target("here", redis_url, settings.namespace)
    async with open_target(other, target) as control:
        snap = await control.snapshot(10)
        assert snap.header.namespace == settings.namespace
        assert snap.queues.pending[Priority.LOW] == 1
    empty = Target("empty", redis_url, settings.namespace + "-empty")
    async with open_target(settings, empty) as control:
        snap = await control.snapshot(10)
        assert snap.queues.total_pending == 0

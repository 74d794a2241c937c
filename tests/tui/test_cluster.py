"""The console in cluster mode: the header names the context, namespace and
autoscaler; the worker table shows pods; scaling pins the autoscaler, and the
pin can be released."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Any

import pytest

from cortex_core.snapshot import Header, WorkerRow
from cortex_tui.app import CortexApp
from cortex_tui.screens.confirm import ConfirmScreen
from cortex_tui.screens.help import HelpScreen
from cortex_tui.widgets.header import HeaderBar
from cortex_tui.widgets.workers import WorkerTable

from .conftest import NEVER
from .fixtures import NOW, SNAPSHOT, FixedControl, record_notifications, settle

# A guard against a hang, not a speed check: on a busy 2-core machine some
# of these tests took 4 to 8s, close to the 10s and 20s limits they had.
pytestmark = pytest.mark.timeout(60)

SnapCompare = Callable[..., bool]
SIZE = (120, 40)

CLUSTER_HEADER = replace(
    SNAPSHOT.header,
    mode="cluster",
    redis="redis://cortex-redis:6379/0",
    backend="kubernetes",
    kube_context="prod-eu",
    kube_namespace="cortex",
    autoscaler="keda cortex-worker 1-5",
)

PODS = (
    WorkerRow(
        name="cortex-worker-7d9f8b6c5-x2k4p",
        state="running",
        host="node-a",
        cpu_percent=25.0,
        rss_bytes=64 * 1_048_576,
        current=("0196a1b2c3d4e5f6a7b8c9d0",),
        done=42,
        failed=1,
        started_at=NOW - 2 * 3600,
        node="node-a",
        restarts=2,
    ),
    WorkerRow(
        name="cortex-worker-7d9f8b6c5-q8r7s",
        state="not ready",
        host="node-b",
        started_at=NOW - 45,
        node="node-b",
        restarts=0,
    ),
)


@dataclass
class ClusterControl(FixedControl):
    """FixedControl with a cluster header, pod rows and a pin to release."""

    released: int = 0

    async def release_pin(self) -> str:
        self.calls.append(("release_pin", ()))
        self.released += 1
        header = replace(self.snapshot_data.header, pinned=None)
        header = replace(header, autoscaler="keda cortex-worker 1-5")
        self.snapshot_data = replace(self.snapshot_data, header=header)
        return "keda cortex-worker 1-5"


def cluster_control(*, pinned: int | None = None) -> ClusterControl:
    header: Header = CLUSTER_HEADER
    if pinned is not None:
        header = replace(
            header, pinned=pinned, autoscaler=f"keda cortex-worker pinned at {pinned}"
        )
    return ClusterControl(
        snapshot_data=replace(SNAPSHOT, header=header, workers=PODS),
        desired=2 if pinned is None else pinned,
    )


def app_for(control: FixedControl) -> CortexApp:
    return CortexApp(control, refresh_seconds=NEVER, tz=UTC)


def test_cluster_dashboard(snap_compare: SnapCompare) -> None:
    assert snap_compare(
        app_for(cluster_control(pinned=3)), terminal_size=SIZE, run_before=settle
    )


async def test_header_and_pod_table() -> None:
    app = app_for(cluster_control(pinned=3))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        header = str(app.screen.query_one(HeaderBar).render())
        for part in (
            "mode cluster",
            "backend kubernetes",
            "context prod-eu",
            "kube ns cortex",
            "autoscaler keda cortex-worker pinned at 3 (u releases)",
        ):
            assert part in header, header
        table = app.screen.query_one(WorkerTable)
        labels = [str(c.label) for c in table.columns.values()]
        assert labels[:5] == ["name", "state", "node", "restarts", "age"]
        rows = [[str(cell) for cell in table.get_row_at(i)] for i in range(2)]
        assert rows[0][1:7] == ["running", "node-a", "2", "2h", "25.0", "64"]
        assert rows[0][0].endswith("7d9f8b6c5-x2k4p")
        # The metrics API had no figure for this pod: n/a, the rest live.
        assert rows[1][2:7] == ["node-b", "0", "45s", "n/a", "n/a"]


async def test_scaling_under_an_autoscaler_asks_to_pin_it() -> None:
    control = cluster_control()
    app = app_for(control)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("plus")  # add a worker
        assert isinstance(app.screen, ConfirmScreen)
        question = str(app.screen.query_one("#question").render())
        assert "keda cortex-worker 1-5 owns the worker count" in question
        assert "Pin it at 3?" in question
        await pilot.press("n")  # decline: nothing is written
        await settle(pilot)
        assert control.calls_to("scale") == []
        await pilot.press("plus")
        await pilot.press("y")
        await settle(pilot)
        assert control.calls_to("scale") == [(1,)]


async def test_pinning_at_zero_asks_twice() -> None:
    control = cluster_control()
    control.desired = 1
    app = app_for(control)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("minus")
        assert "Pin it at 0?" in str(app.screen.query_one("#question").render())
        await pilot.press("y")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        question = str(app.screen.query_one("#question").render())
        assert question.startswith("Scale to 0 workers?")
        await pilot.press("y")
        await settle(pilot)
        assert control.calls_to("scale") == [(-1,)]


async def test_u_releases_the_pin_after_asking() -> None:
    control = cluster_control(pinned=3)
    app = app_for(control)
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "u " in str(app.screen.query_one("#keys").render())
        await pilot.press("escape")
        await pilot.press("u")
        assert isinstance(app.screen, ConfirmScreen)
        question = str(app.screen.query_one("#question").render())
        assert question.startswith("Release the pin at 3 workers?")
        await pilot.press("y")
        await settle(pilot)
        await settle(pilot)
        assert control.released == 1
        assert any("belongs to keda cortex-worker 1-5" in n.message for n in notes)
        header = str(app.screen.query_one(HeaderBar).render())
        assert "pinned" not in header and "u releases" not in header
        await pilot.press("u")  # nothing pinned now: the key does nothing
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert control.released == 1


async def test_embedded_mode_has_no_pin_key(app: CortexApp, control: Any) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("u")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert control.calls_to("release_pin") == []

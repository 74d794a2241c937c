"""A whole tool-use conversation through both fakes: the real anthropic SDK asks
for cluster tools, the real kubernetes client reads the fake cluster, and the
executor is built from settings the way a worker builds it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortex_core.agent import open_executor
from cortex_core.claude import ClaudeExecutor
from cortex_core.cluster.tools import ClusterToolbox
from cortex_core.config import Settings
from cortex_core.errors import ClusterError
from cortex_core.executor import SimulatedExecutor
from cortex_core.system import Services
from tests.fakes import kube_api as k
from tests.fakes.anthropic_api import API_KEY, FakeAnthropic, text_step, tool_step
from tests.fakes.kube_api import FakeKubeAPI
from tests.helpers import make_task


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic().running() as api:
        yield api


@pytest.fixture
def cluster(kube_api: FakeKubeAPI) -> FakeKubeAPI:
    kube_api.add("v1", "pods", k.pod("web-1", namespace="shop", restarts=4))
    kube_api.add(
        "v1",
        "pods",
        k.pod("web-2", namespace="shop", ready=False, phase="Pending"),
    )
    kube_api.add("v1", "pods", k.pod("vault-0", namespace="secrets"))
    kube_api.add("v1", "events", k.event("e1", namespace="shop", reason="FailedMount"))
    return kube_api


def claude_settings(
    settings: Settings, fake: FakeAnthropic, kubeconfig: Path
) -> Settings:
    return settings.replace(
        executor="claude",
        anthropic_api_key=API_KEY,
        anthropic_base_url=fake.url,
        kubeconfig=kubeconfig,
        tool_namespaces="shop",
    )


async def test_conversation_reads_the_cluster_through_the_tools(
    settings: Settings,
    services: Services,
    fake: FakeAnthropic,
    cluster: FakeKubeAPI,
    kubeconfig: Path,
) -> None:
    """The model asks for pods and events in its namespace and for pods
    outside it; the first two reach the cluster, the third is refused, every
    result goes back to the model, and the cluster saw only reads."""
    fake.script = [
        tool_step("list_pods", {"namespace": "shop"}, "toolu_1"),
        tool_step("warning_events", {"namespace": "shop"}, "toolu_2"),
        tool_step("list_pods", {"namespace": "secrets"}, "toolu_3"),
        text_step("web-2 is Pending; FailedMount on web-1."),
    ]
    async with open_executor(
        claude_settings(settings, fake, kubeconfig), services
    ) as executor:
        assert isinstance(executor, ClaudeExecutor)
        assert isinstance(executor.toolbox, ClusterToolbox)
        execution = await executor.run(make_task("security"))
    assert execution.output == "web-2 is Pending; FailedMount on web-1."
    assert execution.calls == 4
    offered = {t["name"] for t in fake.requests[0]["tools"]}
    assert {"list_pods", "warning_events", "node_conditions"} <= offered

    def result_of(request: int) -> dict[str, object]:
        block: dict[str, object] = fake.requests[request]["messages"][-1]["content"][0]
        assert block["type"] == "tool_result"
        return block

    pods = json.loads(str(result_of(1)["content"]))
    assert [p["name"] for p in pods["items"]] == ["web-1", "web-2"]
    assert pods["items"][0]["restarts"] == 4
    assert "FailedMount" in str(result_of(2)["content"])
    refused = result_of(3)
    assert refused["is_error"] is True
    assert "outside" in str(refused["content"])
    assert "vault-0" not in json.dumps(fake.requests[3])
    # Only reads reached the cluster, and nothing outside the scope.
    assert cluster.methods() == {"GET"}
    assert all("/namespaces/secrets/" not in p for p in cluster.paths())
    assert len(cluster.paths()) == 2
    tools = [e.tool for e in execution.transcript if e.kind == "tool_call"]
    assert tools == ["list_pods", "warning_events", "list_pods"]


async def test_tools_none_offers_no_tools(
    settings: Settings, services: Services, fake: FakeAnthropic, tmp_path: Path
) -> None:
    s = settings.replace(
        executor="claude",
        anthropic_api_key=API_KEY,
        anthropic_base_url=fake.url,
        tools="none",
    )
    async with open_executor(s, services) as executor:
        await executor.run(make_task())
    assert "tools" not in fake.requests[0]


async def test_an_unreachable_kubeconfig_stops_the_worker_with_a_clear_error(
    settings: Settings, services: Services, fake: FakeAnthropic, tmp_path: Path
) -> None:
    s = claude_settings(settings, fake, tmp_path / "missing-kubeconfig")
    with pytest.raises(ClusterError, match="kubeconfig"):
        async with open_executor(s, services):
            pass


async def test_simulated_stays_the_default(
    settings: Settings, services: Services
) -> None:
    async with open_executor(settings, services) as executor:
        assert isinstance(executor, SimulatedExecutor)

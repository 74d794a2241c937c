"""The executor a worker runs, built from the settings: the simulated model,
or Claude with the read-only cluster tools (or none) and the result cache."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from cortex_core.cluster.api import ClusterAPI
from cortex_core.cluster.tools import ClusterToolbox
from cortex_core.config import Settings
from cortex_core.executor import Executor, SimulatedExecutor
from cortex_core.resultcache import ResultCache
from cortex_core.system import Services
from cortex_core.tools import Toolbox

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_executor(settings: Settings, sv: Services) -> AsyncIterator[Executor]:
    """The executor the settings name; closes its connections on the way out.

    Raises ClusterError when the cluster tools are wanted and no cluster can
    be reached from the kubeconfig or the pod's service account.
    """
    if settings.executor != "claude":
        yield SimulatedExecutor(
            settings.sim_latency_min,
            settings.sim_latency_max,
            crash_marker=settings.sim_crash_marker,
        )
        return
    # Imported here: the SDK takes over a second to import, which every
    # simulated worker would pay at start.
    from cortex_core.claude import ClaudeConfig, ClaudeExecutor, NoTools

    api: ClusterAPI | None = None
    toolbox: Toolbox = NoTools()
    if settings.tools == "cluster":
        api = ClusterAPI.connect(
            kubeconfig=settings.kubeconfig,
            context=settings.kube_context,
            namespace=settings.kube_namespace,
            timeout=settings.kube_timeout_seconds,
        )
        namespaces = settings.tool_namespace_list(default=api.target.namespace)
        toolbox = ClusterToolbox(api, namespaces=namespaces)
        logger.info(
            "claude: cluster tools on context %s, namespaces %s",
            api.target.context,
            ", ".join(namespaces),
        )
    cache = None
    if settings.result_cache_seconds > 0:
        cache = ResultCache(sv.client, sv.keys, settings.result_cache_seconds)
    executor = ClaudeExecutor(
        ClaudeConfig.from_settings(settings), sv.limiter, toolbox, cache=cache
    )
    try:
        yield executor
    finally:
        await executor.close()
        if api is not None:
            api.close()


__all__ = ["open_executor"]

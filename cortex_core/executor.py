"""Executors run one task. The simulated model stands in for Claude: its
latency and token counts follow the reference workload (3 to 5 s, 100 to 136
tokens a task), and everything it produces says that it is simulated."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
from dataclasses import dataclass, field
from typing import Protocol

from cortex_core.models import Task, TranscriptEntry

logger = logging.getLogger(__name__)

SIMULATED_MODEL = "simulated"
#: Tokens of the simulated system prompt.
_SIM_SYSTEM_TOKENS = 40
_SIM_OUTPUT_MIN = 35
_SIM_OUTPUT_MAX = 68
#: Exit code of a worker the simulated model crashed on purpose.
CRASH_EXIT_CODE = 70


@dataclass(frozen=True)
class Execution:
    output: str
    input_tokens: int
    output_tokens: int
    model: str
    simulated: bool
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    calls: int = 1
    stop_reason: str = "end_turn"
    waited_seconds: float = 0.0
    cached: bool = False
    transcript: tuple[TranscriptEntry, ...] = field(default_factory=tuple)


class ExecutionError(Exception):
    """The model call failed; ``retryable`` says whether another try may work."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Executor(Protocol):
    model: str
    simulated: bool
    manages_budget: bool
    """True when ``run`` reserves and settles the shared budget itself (per
    model call); otherwise the worker reserves ``estimate`` around ``run``.
    The worker reads it as False on an executor that lacks it."""
    waiting: dict[str, float]
    """Task id to the server time of its next attempt, while it waits on a
    rate limit; shown in the worker's heartbeat (empty if it lacks one)."""

    def estimate(self, task: Task) -> tuple[int, int]:
        """Input and output tokens to reserve before the call."""
        ...

    async def run(self, task: Task) -> Execution: ...


class SimulatedExecutor:
    """A model that sleeps for its latency and reports believable usage."""

    model = SIMULATED_MODEL
    simulated = True
    manages_budget = False

    def __init__(
        self,
        latency_min: float,
        latency_max: float,
        *,
        seed: int | None = None,
        crash_marker: str = "",
    ) -> None:
        self.latency_min = latency_min
        self.latency_max = latency_max
        self.crash_marker = crash_marker
        self._rng = random.Random(seed)
        self.waiting: dict[str, float] = {}

    def estimate(self, task: Task) -> tuple[int, int]:
        return self._input_tokens(task), _SIM_OUTPUT_MAX

    async def run(self, task: Task) -> Execution:
        if self.crash_marker and self.crash_marker in task.query:
            logger.critical(
                "task %s: query holds the crash marker; ending this process", task.id
            )
            logging.shutdown()
            os._exit(CRASH_EXIT_CODE)
        latency = self._rng.uniform(self.latency_min, self.latency_max)
        await asyncio.sleep(latency)
        # Output depends on the task alone, so a retry answers the same.
        rng = random.Random(task.id)
        output_tokens = rng.randint(_SIM_OUTPUT_MIN, _SIM_OUTPUT_MAX)
        pods = rng.randint(4, 40)
        not_ready = rng.choice((0, 0, 0, 1, 2))
        services = rng.randint(2, 12)
        text = (
            f"[simulated model] {task.category} domain: {pods} pods checked, "
            f"{not_ready} not ready; {services} services, all with endpoints; "
            f"no warning events in the last hour."
        )
        return Execution(
            output=text,
            input_tokens=self._input_tokens(task),
            output_tokens=output_tokens,
            model=self.model,
            simulated=True,
        )

    @staticmethod
    def _input_tokens(task: Task) -> int:
        return _SIM_SYSTEM_TOKENS + math.ceil(len(task.query.encode("utf-8")) / 4)

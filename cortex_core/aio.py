"""Cancellation that survives the libraries underneath.

On Python 3.11, ``asyncio.wait_for`` returns its result and drops a cancel
that arrives as the awaited call completes; redis-py wraps every socket write
in it, so a task cancelled at that moment goes on as if nothing happened. The
request is not lost, though: ``Task.cancelling()`` still counts it. Each of
cortex's long-running loops calls :func:`raise_if_cancelled` once per turn,
so a cancelled loop ends within one turn whatever swallowed the cancel.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was asked to cancel."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def where(task: asyncio.Task[object]) -> str:
    """Where ``task`` waits, innermost frame last: for a log line on a task
    that did not stop when asked."""
    frames = task.get_stack()
    if not frames:
        return f"{task.get_name()} (not started or done)"
    steps = [
        f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno} {f.f_code.co_name}"
        for f in frames
    ]
    return f"{task.get_name()} at " + " > ".join(steps)

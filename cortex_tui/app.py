"""The ``cortex-tui`` console: a dashboard over a :class:`Control`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import tzinfo

from textual.app import App
from textual.screen import Screen

from cortex_core.config import Settings
from cortex_core.errors import CortexError
from cortex_core.snapshot import Control
from cortex_core.system import System
from cortex_tui.screens.dashboard import DashboardScreen

logger = logging.getLogger(__name__)


class CortexApp(App[None]):
    """The operator console; it owns ``control`` and closes it on exit."""

    CSS_PATH = "cortex.tcss"
    ENABLE_COMMAND_PALETTE = False
    TITLE = "cortex"

    def __init__(
        self,
        control: Control,
        refresh_seconds: float = 1.0,
        *,
        tz: tzinfo | None = None,
        snapshot_timeout: float | None = None,
    ) -> None:
        """``tz`` is the zone times are shown in, None for the local one.

        A refresh that takes longer than ``snapshot_timeout`` seconds (by
        default the larger of 5 and three refresh periods) counts as failed.
        """
        super().__init__()
        if refresh_seconds <= 0:
            raise ValueError("refresh_seconds must be positive")
        self._control = control
        self._refresh_seconds = refresh_seconds
        self._tz = tz
        self._timeout = snapshot_timeout or max(5.0, 3 * refresh_seconds)

    def get_default_screen(self) -> Screen[None]:
        return DashboardScreen(
            self._control,
            refresh_seconds=self._refresh_seconds,
            timeout_seconds=self._timeout,
            tz=self._tz,
        )

    async def on_unmount(self) -> None:
        try:
            await self._control.close()
        except Exception as err:  # the console is gone; say why, do not crash
            logger.warning("closing the control failed: %s", err)


def main(argv: Sequence[str] | None = None) -> int:
    """Open the system the settings point at and run the console on it.

    With no Redis URL this starts embedded Redis; unless another process
    already supervises the local workers, the console supervises them.
    """
    parser = argparse.ArgumentParser(
        prog="cortex-tui", description="Watch and steer a cortex deployment."
    )
    for flag, dest, kind, text in _SETTING_FLAGS:
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=text)
    parser.add_argument(
        "--refresh", type=float, default=1.0, help="seconds between refreshes"
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run the 50-task reference workload, then a task every few seconds",
    )
    args = parser.parse_args(argv)
    if args.refresh <= 0:
        parser.error("--refresh must be positive")
    try:
        settings = Settings.load(
            {dest: getattr(args, dest) for _, dest, _, _ in _SETTING_FLAGS}
        )
        _log_to_file(settings)
        # Local workers run here in embedded mode, or when asked for; in
        # cluster mode the same flag makes the backend watch the pods in the
        # background, so a slow API never holds a refresh up.
        local = (
            settings.embedded
            or args.workers is not None
            or settings.backend == "kubernetes"
        )
        return asyncio.run(
            _console(settings, args.refresh, local_workers=local, demo=args.demo)
        )
    except CortexError as err:
        print(f"cortex-tui: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


_SETTING_FLAGS: list[tuple[str, str, type, str]] = [
    ("--redis-url", "redis_url", str, "Redis URL (default: start embedded Redis)"),
    ("--namespace", "namespace", str, "key namespace of the deployment"),
    ("--data-dir", "data_dir", str, "folder for embedded Redis, audit and logs"),
    ("--workers", "workers", int, "local workers to start"),
    ("--log-level", "log_level", str, "DEBUG, INFO, WARNING or ERROR"),
    ("--backend", "backend", str, "who runs the workers: local or kubernetes"),
    ("--kubeconfig", "kubeconfig", str, "kubeconfig file (kubernetes backend)"),
    ("--kube-context", "kube_context", str, "kubeconfig context"),
    ("--kube-namespace", "kube_namespace", str, "namespace of the workers"),
]


async def _console(
    settings: Settings, refresh_seconds: float, *, local_workers: bool, demo: bool
) -> int:
    if settings.embedded:
        print(f"cortex-tui: starting embedded Redis in {settings.redis_dir}")
    async with System.open(settings, start_workers=local_workers) as system:
        if demo:
            system.start_demo_load()
        app = CortexApp(system.control, refresh_seconds=refresh_seconds)
        # A closed terminal (SIGHUP) or a kill (SIGTERM) quits as 'q' does, so
        # the workers and the Redis this console started stop with it.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, app.exit)
        await app.run_async()
        print("cortex-tui: stopping the local workers")
    return 0


def _log_to_file(settings: Settings) -> None:
    """Log to a file: lines written to the terminal would tear the screen."""
    settings.prepare_data_dir()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=settings.log_dir / "console.log",
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


if __name__ == "__main__":
    sys.exit(main())

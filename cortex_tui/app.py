"""The ``cortex-tui`` console: a dashboard over a :class:`Control`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shlex
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import tzinfo

from textual import work
from textual.app import App

from cortex_core.cli import OneLineParser, seconds
from cortex_core.config import Settings
from cortex_core.errors import CortexError
from cortex_core.snapshot import Control
from cortex_core.system import System
from cortex_core.targets import open_target, parse_targets
from cortex_tui.screens.dashboard import DashboardScreen
from cortex_tui.screens.tasks import DeadLetterScreen, TaskListScreen
from cortex_tui.screens.view import (
    CHANGE_VERBS,
    ViewScreen,
    ask,
    describe,
    parse_priority,
)
from cortex_tui.screens.workers import WorkersScreen

logger = logging.getLogger(__name__)

VIEWS: dict[str, type[ViewScreen]] = {
    "overview": DashboardScreen,
    "tasks": TaskListScreen,
    "dead": DeadLetterScreen,
    "workers": WorkersScreen,
}
"""The views ``:`` switches between, by name."""
HOME = "home"
"""The target the console was started on."""

Opener = Callable[[], AbstractAsyncContextManager[Control]]
"""Opens a control over another deployment; closing it closes the control."""

VIEW_NAMES = {
    **{name: name for name in VIEWS},
    "o": "overview",
    "t": "tasks",
    "d": "dead",
    "dl": "dead",
    "w": "workers",
}
"""Every name a view answers to on the command line."""


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
        read_only: bool = False,
        targets: Mapping[str, Opener] | None = None,
    ) -> None:
        """``tz`` is the zone times are shown in, None for the local one.

        A refresh that takes longer than ``snapshot_timeout`` seconds (by
        default the larger of 5 and three refresh periods) counts as failed.
        With ``read_only`` every action that changes something is hidden and
        refused with a message. ``targets`` opens a control over each other
        deployment ``:target NAME`` can switch to.
        """
        super().__init__()
        if refresh_seconds <= 0:
            raise ValueError("refresh_seconds must be positive")
        self._control = control
        self._refresh_seconds = refresh_seconds
        self._tz = tz
        self._timeout = snapshot_timeout or max(5.0, 3 * refresh_seconds)
        self.read_only = read_only
        self._targets = dict(targets or {})
        self.target = HOME
        """The name of the deployment on screen; ``home`` is the first one."""
        self._home = control
        self._opened: contextlib.AsyncExitStack | None = None

    def on_mount(self) -> None:
        # Views replace each other above the default screen, which stays
        # blank: Textual cannot replace the bottom screen of the stack.
        self.push_screen(self.make_view("overview"))

    def make_view(self, name: str) -> ViewScreen:
        """A fresh view called ``name`` (or one of its short names)."""
        view = VIEWS[VIEW_NAMES[name]]
        return view(
            self._control,
            refresh_seconds=self._refresh_seconds,
            timeout_seconds=self._timeout,
            tz=self._tz,
        )

    def switch_view(self, name: str) -> None:
        """Show the view called ``name`` in place of the current one."""
        # type(), not isinstance: the dead-letter view is a kind of task list.
        if type(self.screen) is VIEWS[VIEW_NAMES[name]]:
            return
        self.switch_screen(self.make_view(name))

    def run_command(self, line: str) -> None:
        """Carry out one command-line command; a bad one is an error message."""
        words = line.split()
        if not words:
            return
        verb, args = words[0].lower(), words[1:]
        try:
            self._run(verb, args)
        except ValueError as err:
            self.notify(str(err), severity="error", markup=False)

    def _run(self, verb: str, args: list[str]) -> None:
        if verb in VIEW_NAMES:
            self.switch_view(verb)
            return
        if verb in ("q", "quit"):
            self.exit()
            return
        screen = self.screen
        if not isinstance(screen, ViewScreen):
            raise ValueError(f":{verb} works from a view")
        if verb in ("h", "help"):
            screen.action_help()
            return
        if verb == "target":
            self._target_command(args)
            return
        if verb not in CHANGE_VERBS:
            known = ", ".join([*VIEWS, *sorted(CHANGE_VERBS), "help", "quit"])
            raise ValueError(f"unknown command {verb!r}: one of {known}")
        if self.read_only:
            raise ValueError(f"read-only mode: {verb} is not allowed")
        control = self._control
        if verb == "scale":
            if len(args) != 1 or not args[0].isdigit():
                raise ValueError("scale: give the worker count, as in :scale 3")
            count = int(args[0])
            if count == 0:
                ask(
                    screen,
                    "Scale to 0 workers? Pending tasks wait until a worker returns.",
                    "Scale to 0",
                    lambda: screen.scale_to(0),
                )
            else:
                screen.scale_to(count)
            return
        if verb == "drain":
            if args:
                raise ValueError("drain: takes no argument")
            ask(
                screen,
                "Drain? No worker claims a task until you resume; running ones end.",
                "Drain",
                lambda: screen.act(control.drain, "Draining: no new claims"),
            )
            return
        if len(args) > 1:
            raise ValueError(f"{verb}: at most one priority")
        priority = parse_priority(args[0] if args else None)
        what = "everything" if priority is None else priority.value
        if verb == "pause":
            screen.act(lambda: control.pause(priority), f"Paused {what}")
        else:
            screen.act(lambda: control.resume(priority), f"Resumed {what}")

    def _target_command(self, args: list[str]) -> None:
        names = [HOME, *self._targets]
        if not args:
            listed = ", ".join(f"[{n}]" if n == self.target else n for n in names)
            self.notify(f"targets: {listed}", markup=False)
            return
        if len(args) > 1 or args[0] not in names:
            raise ValueError(f"target: one of {', '.join(names)}")
        if args[0] != self.target:
            self._switch_target(args[0])

    @work(group="target", exclusive=True)
    async def _switch_target(self, name: str) -> None:
        """Open ``name`` (the home target is never closed), then show it."""
        stack = contextlib.AsyncExitStack()
        control = self._home
        if name != HOME:
            try:
                control = await stack.enter_async_context(self._targets[name]())
            except Exception as err:  # the console stays on what it showed
                await stack.aclose()
                self.notify(
                    f"target {name}: {describe(err)}", severity="error", markup=False
                )
                return
        old, self._opened = self._opened, stack
        self._control, self.target = control, name
        view = self.screen
        while len(self.screen_stack) > 2:  # close dialogs and the detail first
            await self.pop_screen()
        name_of_view = getattr(view, "VIEW", "") or "overview"
        await self.switch_screen(self.make_view(name_of_view))
        self.notify(f"Watching {name}: {control.header.redis}", markup=False)
        if old is not None:
            await old.aclose()

    async def on_unmount(self) -> None:
        if self._opened is not None:
            try:
                await self._opened.aclose()
            except Exception as err:  # the console is gone; say why, do not crash
                logger.warning("closing target %s failed: %s", self.target, err)
        try:
            await self._home.close()
        except Exception as err:  # the console is gone; say why, do not crash
            logger.warning("closing the control failed: %s", err)


def main(argv: Sequence[str] | None = None) -> int:
    """Open the system the settings point at and run the console on it.

    With no Redis URL this opens the embedded Redis (starting it if none
    runs) and supervises the local workers, or stands by to take them over
    while another process supervises them; a read-only console starts none.
    """
    parser = OneLineParser(
        prog="cortex-tui", description="Watch and steer a cortex deployment."
    )
    for flag, dest, kind, text in _SETTING_FLAGS:
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=text)
    parser.add_argument(
        "--refresh", type=seconds, default=1.0, help="seconds between refreshes"
    )
    parser.add_argument(
        "--read-only",
        dest="read_only",
        action="store_const",
        const=True,
        default=None,
        help="show everything, change nothing (also the read_only setting)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="serve this console to a web browser instead of the terminal",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address --serve listens on"
    )
    parser.add_argument("--port", type=int, default=8000, help="port --serve uses")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run the 50-task reference workload, then a task every few seconds",
    )
    args = parser.parse_args(argv)
    if args.refresh > 3600:
        parser.error(f"--refresh: at most 3600 seconds, not {args.refresh:g}")
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be from 1 to 65535, not {args.port}")
    if args.serve:
        return serve(sys.argv[1:] if argv is None else list(argv), args.host, args.port)
    try:
        overrides = {dest: getattr(args, dest) for _, dest, _, _ in _SETTING_FLAGS}
        overrides["read_only"] = args.read_only
        settings = Settings.load(overrides)
        _log_to_file(settings)
        # Local workers run here in embedded mode, or when asked for, but
        # never under a read-only console, which must change nothing; in
        # cluster mode the same flag makes the backend watch the pods in the
        # background, so a slow API never holds a refresh up.
        runs_workers = settings.embedded or args.workers is not None
        local = (
            runs_workers and not settings.read_only
        ) or settings.backend == "kubernetes"
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
        # It may start one, or use the one another process on the folder runs.
        print(f"cortex-tui: opening the embedded Redis in {settings.redis_dir}")
    async with System.open(settings, start_workers=local_workers) as system:
        if demo:
            system.start_demo_load()
        targets = {
            name: functools.partial(open_target, settings, target)
            for name, target in parse_targets(settings.targets).items()
        }
        app = CortexApp(
            system.control,
            refresh_seconds=refresh_seconds,
            read_only=settings.read_only,
            targets=targets,
        )
        # A closed terminal (SIGHUP) or a kill (SIGTERM) quits as 'q' does, so
        # the workers and the Redis this console started stop with it.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, app.exit)
        await app.run_async()
        if system.local_workers:
            print(f"cortex-tui: stopping {system.local_workers} local workers")
    return 0


def serve(argv: list[str], host: str, port: int) -> int:
    """Serve the console to browsers: each page opened runs ``cortex-tui``
    with the same arguments (less ``--serve``) behind a web terminal."""
    from textual_serve.server import Server

    inner = [a for a in argv if a != "--serve"]
    for flag in ("--host", "--port"):
        while flag in inner:
            at = inner.index(flag)
            del inner[at : at + 2]
        inner = [a for a in inner if not a.startswith(f"{flag}=")]
    command = shlex.join([sys.executable, "-m", "cortex_tui", *inner])
    print(f"cortex-tui: serving on http://{host}:{port}", flush=True)
    try:
        Server(command, host=host, port=port, title="cortex").serve()
    except OSError as err:
        print(
            f"cortex-tui: cannot serve on {host}:{port}: {err.strerror}",
            file=sys.stderr,
        )
        return 2
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

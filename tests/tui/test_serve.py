"""``cortex-tui --serve``: the console in a headless Chromium, through
textual-serve on 127.0.0.1. Every request the page makes to another address
(the page asks for a web font) is blocked."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

playwright_api = pytest.importorskip("playwright.async_api")
sync_api = pytest.importorskip("playwright.sync_api")

from playwright.async_api import Route, async_playwright  # noqa: E402

from cortex_core.system import Services  # noqa: E402

pytestmark = pytest.mark.timeout(150)

LOCAL = ("http://127.0.0.1:", "ws://127.0.0.1:")


def chromium() -> str | None:
    """A Chromium Playwright can drive: its own download, else the system's."""
    with sync_api.sync_playwright() as p:
        own = Path(p.chromium.executable_path)
        if own.exists():
            return str(own)
    for name in ("chromium-headless-shell", "chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


BROWSER = chromium()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(child_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    output = tmp_path / "serve.out"
    with output.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cortex_tui", "--serve", "--port", str(port)],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                pytest.fail(f"cortex-tui --serve exited: {output.read_text()}")
            time.sleep(0.1)
        else:
            pytest.fail("cortex-tui --serve did not listen within 30s")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SETUP_COMMANDS = frozenset({"client|setinfo", "client|setname", "hello", "select"})
"""What a new connection sends before it does any work."""


async def polling(services: Services, before: set[str]) -> None:
    """Return once a connection opened after ``before`` ran a real command."""
    deadline = time.monotonic() + 60
    while True:
        clients = await services.client.client_list()
        if any(
            c["id"] not in before and c["cmd"] not in SETUP_COMMANDS for c in clients
        ):
            return
        assert time.monotonic() < deadline, "the served console never read Redis"
        await asyncio.sleep(0.2)


@pytest.mark.skipif(
    BROWSER is None,
    reason="no Chromium on this machine: `playwright install chromium` could not "
    "download one and no system chromium-headless-shell is installed",
)
async def test_the_console_answers_keys_in_a_browser(
    served: str, services: Services
) -> None:
    """The page starts the console; keys typed in the browser pause a queue."""
    blocked: list[str] = []

    async def only_local(route: Route) -> None:
        if route.request.url.startswith(LOCAL):
            await route.continue_()
        else:
            blocked.append(route.request.url)
            await route.abort()

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=BROWSER, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.route("**/*", only_local)

            before = {c["id"] for c in await services.client.client_list()}
            await page.goto(served)
            await page.wait_for_selector("body.-first-byte", timeout=60_000)
            # The first byte can come before the console listens to keys; it
            # does once its view is mounted, which starts the refresh loop:
            # wait for the served console's connection to read a snapshot.
            await polling(services, before)
            assert "high" not in (await services.queue.depths()).paused
            # Type the command, at a typist's pace, until Redis shows it: keys
            # sent while the page settles can be lost. The check below fails
            # if a partial burst reached a binding instead of the line.
            deadline = time.monotonic() + 60
            while "high" not in (await services.queue.depths()).paused:
                assert time.monotonic() < deadline, "the pause never reached Redis"
                await page.focus(".xterm-helper-textarea")
                await page.keyboard.press("Escape")  # close whatever is open
                await page.keyboard.type(":pause high", delay=100)
                await page.keyboard.press("Enter")
                await asyncio.sleep(2.0)
            # Every key went to the command line: none reached a binding.
            assert (await services.queue.depths()).paused == frozenset({"high"})
        finally:
            await browser.close()
    assert all(not url.startswith(LOCAL) for url in blocked)

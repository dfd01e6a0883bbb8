"""Fixtures for the end-to-end tests: the real service as a subprocess and headless
Chromium driven by Playwright, both inside a network namespace that has only ``lo``.

Why a namespace: this machine has an eth0, and Chromium gathers ICE candidates on
every interface it sees even when the server offers only 127.0.0.1 (there is no
switch to stop it). ``loopback_only_network()`` (tests/transports/probe.py) moves
the test's thread into a fresh namespace with only ``lo`` up; every process the
thread starts from then on is born in it: the service (``subprocess.Popen``), the
Playwright driver and the Chromium it launches. Nothing here can send a packet
past loopback, and because the namespace is new, no other process holds a port
in it (a free port picked by binding to port 0 stays free).

Clean-up: the browser is closed and the driver stopped; the service gets SIGTERM
(it drains), a second SIGTERM after a deadline (skip the drain), then SIGKILL of
its process group. ``e2e_env`` then checks that no process started during the
test is left, and kills (by pid) and reports any that is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from ..transports.probe import loopback_only_network

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "out"
RECORDER = Path(__file__).with_name("recorder.js")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [  # ../shared/PEERS.md, "WebRTC: headless Chromium"
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
]
STOP_DEADLINE = 10.0  # s after SIGTERM before a second SIGTERM, and again before SIGKILL
LEFTOVER_DEADLINE = 10.0  # s for processes started by the test to be gone after clean-up


def require_browser() -> None:
    """Fail (never skip) when the browser side cannot run, naming the install."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} missing: install it with `apt-get install chromium` (part of the test install)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("playwright missing: install it with `pip install playwright` (part of the test install; "
                    f"it drives the system browser at {CHROMIUM}, no `playwright install` needed)")


# -- the namespace and the process guard -----------------------------------------------


@pytest.fixture
def e2e_env() -> Iterator[None]:
    """A loopback-only network for the test's thread; no process left behind after it."""
    require_browser()
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    try:
        with loopback_only_network():
            interfaces = [name for _, name in socket.if_nameindex()]
            assert interfaces == ["lo"], f"the namespace should have only lo, not {interfaces}"
            yield
    finally:
        leftovers = _leftovers(me, before, LEFTOVER_DEADLINE)
        for p in leftovers:  # ours: started during this test; by pid, never by name
            with contextlib.suppress(psutil.Error):
                p.kill()
        assert not leftovers, "processes left behind: " + ", ".join(
            f"{p.pid} {_name(p)}" for p in leftovers
        )


def _leftovers(me: psutil.Process, before: set[int], deadline: float) -> list[psutil.Process]:
    end = time.monotonic() + deadline
    while True:
        alive = []
        for p in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.2)


def _name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()[:3]) or p.name()
    except psutil.Error:
        return "?"


# -- the service ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    """``python -m voxline serve`` in a subprocess (its own process group)."""

    agent: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    returncode: int | None = None
    signals: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            return exc.code, json.loads(body) if body else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def wait_ready(self, deadline: float) -> dict[str, Any]:
        """Poll /readyz until 200; fail with the log if the process exits or time runs out."""
        end = time.monotonic() + deadline
        last: Any = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                pytest.fail(f"voxline serve exited with {self.proc.returncode} before it was ready:\n{self.log_tail()}")
            try:
                status, body = self.get("/readyz", timeout=2.0)
            except (OSError, ValueError) as exc:  # not listening yet
                last = exc
            else:
                last = body
                if status == 200:
                    return body  # type: ignore[no-any-return]
            time.sleep(0.25)
        pytest.fail(f"voxline serve not ready within {deadline:.0f} s (last /readyz: {last}):\n{self.log_tail()}")

    def stop(self) -> int:
        """SIGTERM (drain), a second SIGTERM (skip the drain), SIGKILL; the exit code."""
        if self.returncode is not None:
            return self.returncode
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            self.signals.append(sig.name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)  # the group we created: the service and anything it spawned
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_DEADLINE)
        self.returncode = self.proc.wait(STOP_DEADLINE)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # nothing of the group may outlive it
        return self.returncode


def _service_env() -> dict[str, str]:
    # No inherited VOXLINE_* settings (an API token would lock the page out, an unknown
    # key is a config error); VOXLINE_CACHE says where the models are and is kept.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXLINE_") or k == "VOXLINE_CACHE"}
    env["VOXLINE_LOG_FORMAT"] = "text"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def service(e2e_env: None, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """``start(agent, ready_deadline)``: the service, ready; stopped at teardown."""
    started: list[Service] = []

    def start(agent: str, ready_deadline: float) -> Service:
        port = free_port()
        log = tmp_path / f"voxline-{agent}.log"
        cmd = [sys.executable, "-m", "voxline", "serve", "--agent", agent, "--http-port", str(port),
               "--host", "127.0.0.1", "--ice-host", "127.0.0.1"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=_service_env(), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        svc = Service(agent, port, log, proc)
        started.append(svc)
        ready = svc.wait_ready(ready_deadline)
        print(f"\nvoxline serve --agent {agent} ready on {svc.url}: {ready}")
        return svc

    try:
        yield start
    finally:
        for svc in started:
            svc.stop()


# -- the browser ---------------------------------------------------------------------


@dataclass
class Browser:
    page: Any  # playwright.sync_api.Page
    console: list[str]

    def diagnostics(self) -> str:
        return "console:\n  " + "\n  ".join(self.console[-30:])


@pytest.fixture
def browser(e2e_env: None) -> Iterator[Callable[[Path], Browser]]:
    """``open(wav)``: a page in headless Chromium whose microphone plays ``wav`` (looped),
    with tests/e2e/recorder.js injected; closed at teardown."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()  # the driver starts here, in the namespace
    launched: list[Any] = []

    def open_page(wav: Path) -> Browser:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={wav}"],
            ignore_default_args=["--mute-audio"],
        )
        launched.append(b)
        # The page's CSP is script-src 'self': evaluate and wait_for_function need bypass_csp.
        page = b.new_page(bypass_csp=True, viewport={"width": 1100, "height": 900})
        page.add_init_script(path=str(RECORDER))
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        return Browser(page, console)

    try:
        yield open_page
    finally:
        try:
            for b in launched:
                with contextlib.suppress(Exception):
                    b.close()
        finally:
            pw.stop()

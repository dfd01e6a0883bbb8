"""``voxline serve`` as a process: ready, healthy, refuses to expose itself, drains on SIGTERM."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from voxline.config import ConfigError, ServiceConfig
from voxline.control.serve import check_exposure, is_loopback

from .api_fixtures import OFFER_SDP

ROOT = Path(__file__).resolve().parents[2]
READY_DEADLINE = 120.0  # s: a wait limit (model loading on a slow machine), not an assertion
EXIT_DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    # The developer's own VOXLINE_* settings must not leak into the test's service.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXLINE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def request(url: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")


def wait_ready(proc: subprocess.Popen, base: str) -> dict:
    deadline = time.monotonic() + READY_DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited with {proc.returncode}:\n{proc.stderr.read()}")
        try:
            status, body = request(f"{base}/readyz")
            if status == 200:
                return body
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"not ready within {READY_DEADLINE} s:\n{proc.communicate()[1]}")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "voxline.toml"
    path.write_text('drain_timeout = 1.0\nlog_format = "json"\nlog_level = "INFO"\nvad = "webrtc"\n')
    return path


def start(module: str, config_file: Path, port: int, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", module, "serve", "--config", str(config_file),
           "--agent", "echo", "--http-port", str(port), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=EXIT_DEADLINE)


def log_lines(stderr: str) -> list[dict]:
    return [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_serve_is_ready_healthy_and_drains_on_sigterm(config_file, processes) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start("tests.control.serve_fake", config_file, port)
    processes.append(proc)
    ready = wait_ready(proc, base)
    assert ready["checks"]["listening"] and ready["checks"]["models"]
    assert request(f"{base}/healthz") == (200, {"status": "ok"})
    status, created = request(f"{base}/v1/webrtc/offer", "POST", {"sdp": OFFER_SDP, "type": "offer"})
    assert status == 201, created  # no tokens on loopback: auth is off
    status, listed = request(f"{base}/v1/sessions")
    assert [s["agent"] for s in listed["sessions"]] == ["echo"]  # --agent is the default

    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=EXIT_DEADLINE)
    assert proc.returncode == 0, stderr
    lines = log_lines(stderr)
    messages = [line["message"] for line in lines]
    assert any(m.startswith(f"voxline listening: open http://127.0.0.1:{port}/") for m in messages)
    assert any("auth is off" in m for m in messages)
    assert any(m.startswith("draining: 1 session") for m in messages)
    ended = [x for x in lines if x["message"] == "session ended"]
    assert [x["session_id"] for x in ended] == [created["session_id"]]  # ended by the drain, logged with its id
    assert messages[-1] == "voxline stopped"


def test_serve_refuses_a_public_address_without_tokens(config_file, processes) -> None:
    proc = start("voxline", config_file, free_port(), "--host", "0.0.0.0")
    processes.append(proc)
    _, stderr = proc.communicate(timeout=EXIT_DEADLINE)
    assert proc.returncode == 2
    assert "refusing to serve on 0.0.0.0 without authentication" in stderr


def test_serve_fails_cleanly_when_the_port_is_taken(config_file, processes) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = start("tests.control.serve_fake", config_file, taken.getsockname()[1])
        processes.append(proc)
        _, stderr = proc.communicate(timeout=EXIT_DEADLINE)
    assert proc.returncode == 1
    assert any("cannot listen" in x["message"] for x in log_lines(stderr))


def test_exposure_rules() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("example.com")
    check_exposure(ServiceConfig(host="127.0.0.1"))
    check_exposure(ServiceConfig(host="0.0.0.0", api_tokens=("t",)))
    with pytest.raises(ConfigError, match="VOXLINE_API_TOKENS"):
        check_exposure(ServiceConfig(host="192.0.2.10"))


@pytest.mark.skipif(
    importlib.util.find_spec("voxline.control.runtime") is None,
    reason="voxline.control.runtime (the real runtime) is not in the tree yet",
)
def test_voxline_serve_with_the_real_runtime(config_file, processes) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start("voxline", config_file, port)
    processes.append(proc)
    ready = wait_ready(proc, base)
    assert ready["ready"] is True
    assert request(f"{base}/healthz") == (200, {"status": "ok"})
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=EXIT_DEADLINE)
    assert proc.returncode == 0, stderr

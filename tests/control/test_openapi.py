"""The OpenAPI document: valid, identical to the routes served, and the server conforms to it.

Conformance is a schemathesis run (property-based: examples, boundary values and
fuzzed inputs for every operation, each response checked against the documented
status codes, content types, headers and schemas, and unauthenticated variants
checked to be refused) against the app served over real HTTP from a thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate

from voxline.config import ServiceConfig
from voxline.control.app import DOCUMENT, ROUTES, SESSIONS, STATE, create_app, mark_listening
from voxline.control.runtime import Runtime
from voxline.control.openapi import Reply, Route, build_document, schemas_for

from .api_fixtures import STATIC_TOKEN
from .fakes import FakeRuntime

AGENTS = FakeRuntime.agents


def test_the_document_is_valid_openapi() -> None:
    app = create_app(ServiceConfig(), FakeRuntime)
    doc = app[DOCUMENT]  # the core's routes and every registered door's
    validate(doc)
    assert doc["components"]["schemas"]["WebRtcOffer"]["properties"]["agent"]["enum"] == list(AGENTS)
    assert doc["paths"]["/v1/webrtc/offer"]["post"]["tags"] == ["webrtc"]


def test_routes_served_are_exactly_the_routes_documented() -> None:
    app = create_app(ServiceConfig(), FakeRuntime)
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    doc = app[DOCUMENT]
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented
    secured = {(m.upper(), p) for p, ops in doc["paths"].items() for m, op in ops.items() if op["security"]}
    assert ("GET", "/healthz") not in secured and ("GET", "/v1/sessions") in secured
    assert ("GET", "/metrics") in secured


def test_the_document_changes_with_the_table() -> None:
    async def handler(request: Any) -> Any:
        raise AssertionError

    extra = Route("GET", "/v1/x/{session_id}", handler, "x", "X", replies={200: Reply("ok", "Accepted")})
    doc = build_document((*ROUTES, extra), AGENTS, "0.0.0")
    op = doc["paths"]["/v1/x/{session_id}"]["get"]
    assert set(op["responses"]) == {"200", "401", "404"}  # auth and path-parameter errors added
    assert op["parameters"][0]["schema"]["pattern"] == "^[0-9a-f]{16}$"
    validate(doc)
    assert "SayRequest" in schemas_for(AGENTS)


class LiveServer:
    """The app on its own event loop in a thread: schemathesis calls it synchronously."""

    def __init__(self, config: ServiceConfig, factory: Any = FakeRuntime) -> None:
        self.config = config
        self.factory = factory
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="live-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        from aiohttp import web

        app = create_app(self.config, self.factory)
        self.app = app
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        start = app[STATE].start_task
        if start is not None:
            await start
        mark_listening(app)
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._stop = asyncio.Event()
        self.ready.set()
        await self._stop.wait()
        await runner.cleanup()
        self.stopped.set()

    def __enter__(self) -> LiveServer:
        self._thread.start()
        assert self.ready.wait(30), "server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert self.stopped.is_set(), "server did not stop"


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    # Unlimited creation rate and room for many sessions, so generated valid offers get 201.
    config = ServiceConfig(api_tokens=(STATIC_TOKEN,), sessions_per_minute=0, max_sessions=10_000,
                           sip_port=0, sip_dial_allow=("127.0.0.0/8",))  # calls out: loopback only
    with LiveServer(config) as server:
        yield server


def _st() -> str:
    st = Path(sys.executable).with_name("st")
    if not st.exists():
        pytest.fail("schemathesis is not installed: pip install schemathesis (a test dependency)")
    return str(st)


# Schemathesis's own list plus 413: a body over the size limit is refused as too
# large before it is parsed, which is the right answer to an oversized invalid body.
#
# A SIP URI's schema (a call's target, a transfer's) is a string starting
# "sip:"; the URI grammar (RFC 3261 §25) is the service's to check, and a target
# that does not resolve or is outside sip_dial_allow is a 400 naming "to".
#
# An SDP offer's schema is a string starting "v=0"; what makes it an offer
# (a fingerprint, ICE credentials, an audio m-line, at most 8 m-lines) is checked
# by the service and answered 400 invalid_sdp, as the document says: for that one
# operation a schema-valid body may get 400. So for ARI external media: a
# ``remote`` of the schema's shape must also be a real IP address and a port
# from 1 to 65535 ("[0]:0" is not). A call list's cursor is opaque: one of the
# schema's shape that this service did not hand out is 400 invalid_cursor.
ST_CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

[[operations]]
include-operation-id = "createWebRtcSession"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-operation-id = "createExternalMediaSession"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-operation-id = "createCall"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-operation-id = "transferSession"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-operation-id = "listCalls"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "5xx"]
"""


def _schemathesis(url: str, tmp_path: Path, examples: int = 40) -> str:
    # Every phase (schema examples, boundary/negative coverage, fuzzing, stateful
    # sequences following the document's links) and every check; a fixed seed so a
    # failure reproduces. The events route and the media streams (/v1/streams/...)
    # are WebSockets, which OpenAPI cannot describe and an HTTP fuzzer cannot call:
    # test_api and tests/transports/streams cover them over a real socket.
    config = tmp_path / "schemathesis.toml"
    config.write_text(ST_CONFIG)
    cmd = [
        _st(), "--config-file", str(config), "run", f"{url}/openapi.json",
        "--header", f"Authorization: Bearer {STATIC_TOKEN}",
        "--checks", "all",
        "--max-examples", str(examples),
        "--seed", "20240601",
        "--workers", "1",
        "--request-timeout", "20",
        "--exclude-operation-id-regex", "^(sessionEvents|stream[A-Z][A-Za-z]*)$",  # WebSockets
        "--no-color",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"})
    report = out.stdout + out.stderr
    # Reproduction commands can quote bodies of hundreds of KiB: keep the failure readable.
    assert out.returncode == 0, report if len(report) < 20_000 else report[:10_000] + "\n...\n" + report[-10_000:]
    assert "20 selected / 28 total" in report, report  # every HTTP operation was exercised
    return report


def test_the_server_conforms_to_its_document(live: LiveServer, tmp_path: Path) -> None:
    _schemathesis(live.url, tmp_path)


class EchoRuntime(Runtime):
    """The real runtime, offering only the agent that needs no models."""

    agents = ("echo",)


def test_the_real_service_conforms_to_its_document(tmp_path: Path) -> None:
    # The real runtime and real aiortc: the document's own example offer is
    # answered (201), and the stateful phase follows the links from a created
    # session to its routes (inspect, say, interrupt, end).
    config = ServiceConfig(api_tokens=(STATIC_TOKEN,), agent="echo", vad="webrtc", ice_hosts=("127.0.0.1",),
                           sessions_per_minute=0, max_sessions=10_000, max_pending_per_token=10_000,
                           max_sessions_per_token=10_000, pending_timeout=2.0,
                           sip_port=0, sip_dial_allow=("127.0.0.0/8",), sip_ring_timeout=2.0)
    with LiveServer(config, EchoRuntime) as server:
        report = _schemathesis(server.url, tmp_path, examples=15)
        admitted = server.app[SESSIONS].admitted
    links = re.search(r"API Links:\s+(\d+) covered", report)
    assert links is not None and int(links.group(1)) >= 3, report
    assert admitted > 0, report

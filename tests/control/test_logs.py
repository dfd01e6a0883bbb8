"""JSON-lines and text logs carry the session and turn on every line that has them."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from voxline.config import ConfigError, ServiceConfig
from voxline.control.app import STATE, create_app, mark_listening
from voxline.control.runtime import Runtime
from voxline.transports.webrtc_call import EXAMPLE_OFFER
from voxline.control.logs import JsonFormatter, TextFormatter, configure_logging
from voxline.control.session import SessionRegistry, SessionState


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def capture(formatter: logging.Formatter, name: str = "voxline.test") -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def lines(stream: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


class Opaque:
    def __str__(self) -> str:
        return "opaque!"


def test_json_lines_have_the_fixed_fields_and_the_context() -> None:
    logger, stream = capture(JsonFormatter())
    adapter = logging.LoggerAdapter(logger, {"session_id": "abc123"})
    adapter.info("turn %d done", 3)
    logger.warning("over budget", extra={"session_id": "abc123", "turn_id": 4, "thing": Opaque()})
    logger.info("no context")
    first, second, third = lines(stream)
    assert first["message"] == "turn 3 done" and first["level"] == "INFO"
    assert first["logger"] == "voxline.test" and first["session_id"] == "abc123"
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert (second["session_id"], second["turn_id"], second["thing"]) == ("abc123", 4, "opaque!")
    assert list(second)[:6] == ["time", "level", "logger", "message", "session_id", "turn_id"]
    assert "session_id" not in third and "turn_id" not in third


def test_json_lines_carry_exceptions_on_one_line() -> None:
    logger, stream = capture(JsonFormatter())
    try:
        raise ValueError("bad frame")
    except ValueError:
        logger.exception("stage failed", extra={"session_id": "s1"})
    (line,) = lines(stream)
    assert "ValueError: bad frame" in line["exc"] and line["level"] == "ERROR"


def test_text_format_shows_the_context() -> None:
    logger, stream = capture(TextFormatter())
    logger.info("hello", extra={"session_id": "s1", "turn_id": 2})
    logger.info("plain")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("INFO voxline.test [session_id=s1 turn_id=2]: hello")
    assert second.endswith("INFO voxline.test: plain")


async def test_a_sessions_own_lines_carry_its_id(restore_root) -> None:
    stream = io.StringIO()
    configure_logging(ServiceConfig(log_format="json", log_level="DEBUG"), stream)
    session = SessionRegistry(1).admit("t", "webrtc", "echo")
    session.set_state(SessionState.ACTIVE)
    (line,) = [x for x in lines(stream) if x["logger"] == "voxline.control.session"]
    assert line["session_id"] == session.id and line["message"] == "session active"


def test_configure_logging_replaces_handlers_and_checks_its_settings(restore_root) -> None:
    stream = io.StringIO()
    handler = configure_logging(ServiceConfig(log_format="text", log_level="warning"), stream)
    root = logging.getLogger()
    assert root.handlers == [handler] and root.level == logging.WARNING
    logging.getLogger("voxline.x").info("hidden")
    logging.getLogger("voxline.x").warning("shown")
    assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()
    with pytest.raises(ConfigError, match="log_format"):
        configure_logging(ServiceConfig(log_format="xml"))
    with pytest.raises(ConfigError, match="log_level"):
        configure_logging(ServiceConfig(log_level="LOUD"))


class _EchoRuntime(Runtime):
    agents = ("echo",)


async def test_the_webrtc_libraries_lines_carry_the_session_id(restore_root) -> None:
    # aiortc and aioice know nothing of sessions; their lines are the ones that
    # matter when a call's ICE fails, and must be selectable by session_id.
    stream = io.StringIO()
    config = ServiceConfig(agent="echo", vad="webrtc", ice_hosts=("127.0.0.1",), log_level="DEBUG")
    configure_logging(config, stream)
    app = create_app(config, _EchoRuntime)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        await app[STATE].start_task
        mark_listening(app)
        resp = await client.post("/v1/webrtc/offer", json={"sdp": EXAMPLE_OFFER, "type": "offer"})
        assert resp.status == 201
        sid = (await resp.json())["session_id"]
        assert (await client.delete(f"/v1/sessions/{sid}")).status == 204
    finally:
        await client.close()
    theirs = [x for x in lines(stream) if x["logger"].startswith(("aioice", "aiortc"))]
    assert len(theirs) >= 5 and any("connection_lost" in x["message"] for x in theirs)
    assert {x.get("session_id") for x in theirs} == {sid}

"""Recording per call through the API: a session-creating request's ``record``
overrides the configuration either way, and is in the OpenAPI document."""

from __future__ import annotations

import pytest

from voxline.control.app import SESSIONS

from ..transports.streams.helpers import TOKEN, eventually, make_app
from .helpers import records_config

__all__ = ["make_app"]

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(("configured", "asked", "recorded"),
                         [(False, True, True), (True, False, False), (False, None, False), (True, None, True)])
async def test_record_in_the_request_wins_over_the_configuration(make_app, tmp_path, configured: bool,  # type: ignore[no-untyped-def]
                                                                 asked: bool | None, recorded: bool) -> None:
    app = await make_app(records_config(f"sqlite:///{tmp_path / 'calls.db'}", str(tmp_path), record=configured))
    body: dict[str, object] = {"format": "ulaw", "remote": "127.0.0.1:9"}
    if asked is not None:
        body["record"] = asked
    r = await app.client.post("/v1/sessions/rtp", json=body, headers=AUTH)
    assert r.status == 201, await r.text()
    sid = (await r.json())["session_id"]
    session = app.app[SESSIONS].get(sid)
    await eventually(lambda: session.pipeline is not None, what="the pipeline")
    assert ("recording" in session.extra) is recorded
    assert session.extra["peer"] == "127.0.0.1:9"  # for the call's record
    r = await app.client.delete(f"/v1/sessions/{sid}", headers=AUTH)
    assert r.status == 204


async def test_record_is_documented_on_every_request_that_creates_a_session(make_app, tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(records_config(f"sqlite:///{tmp_path / 'calls.db'}", str(tmp_path)))
    doc = await (await app.client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    for name in ("WebRtcOffer", "CallRequest", "ExternalMediaRequest"):
        assert schemas[name]["properties"]["record"]["type"] == "boolean", name
    r = await app.client.post("/v1/sessions/rtp", json={"format": "ulaw", "record": "yes"}, headers=AUTH)
    assert r.status == 400  # not a boolean: refused, nothing admitted
    assert not app.app[SESSIONS].list()

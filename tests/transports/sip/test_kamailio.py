"""Calls to voxline through Kamailio, a real SIP proxy in the path.

Kamailio (started by the test, foreground, on loopback) record-routes every
INVITE and relays it to the SIP door; in-dialog requests are loose-routed
through it. What must hold: a call from sipp through the proxy is answered,
its audio and DTMF reach the agent, and its BYE (routed through the proxy)
ends it; a call that voxline ends sends its BYE along the route set, through
the proxy, not straight to the caller.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.transports.sip.test_sipp import CAPTURES, SIPP, Watch, released, service  # noqa: F401  (the fixture)
from tests.transports.sip.uac import Uac, free_port
from voxline.control.app import SESSIONS
from voxline.transports.sip.message import Request, make_response, parse_message
from voxline.transports.sip_door import SipDoor

KAMAILIO = shutil.which("kamailio") or ("/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None)
MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(KAMAILIO is None, reason="kamailio (apt-get install kamailio) is not installed")]

CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
listen=udp:127.0.0.1:{port}
alias="127.0.0.1:{port}"
mpath="{modules}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
modparam("rr", "enable_full_lr", 1)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    record_route();
    $du = "sip:127.0.0.1:{voxline}";
    t_relay();
}}
"""


@pytest.fixture
def kamailio(service: tuple[Any, SipDoor], tmp_path: Path) -> Iterator[tuple[str, int]]:  # noqa: F811
    _, door = service
    port = free_port()
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text(CONFIG.format(port=port, voxline=door.address[1], modules=MODULES))
    run = tmp_path / "run"
    run.mkdir()
    log = (tmp_path / "kamailio.log").open("w")
    proc = subprocess.Popen([KAMAILIO or "kamailio", "-f", str(cfg), "-DD", "-E", "-Y", str(run), "-w", str(tmp_path)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def routed_scenario(tmp_path: Path) -> Path:
    """sipp's uac_pcap, made to follow the route set: its built-in scenarios send
    ACK and BYE straight to the request's target, which a record-routing proxy
    refuses (404) once the dialog exists. With ``rrs`` on the 200, ``[routes]``
    and ``[next_url]`` (sipp's own keywords) put the proxy's Route and voxline's
    Contact in them, as RFC 3261 §12.2.1.1 says."""
    # (sipp -sd prints the scenario and exits 99, its way of saying it ran nothing.)
    text = subprocess.run([SIPP or "sipp", "-sd", "uac_pcap"], capture_output=True, text=True, timeout=30).stdout
    assert "<scenario" in text, text[-500:]
    text = text.replace('<recv response="200" rtd="true" crlf="true">',
                        '<recv response="200" rtd="true" crlf="true" rrs="true">')
    for method, cseq in (("ACK", "CSeq: 1 ACK"), ("BYE", "CSeq: 2 BYE")):
        text = text.replace(f"{method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0", f"{method} [next_url] SIP/2.0")
        text = text.replace(cseq, f"{cseq}\n      [routes]")
    assert text.count("[routes]") == 2 and text.count("[next_url]") == 2 and 'rrs="true"' in text
    path = tmp_path / "uac_pcap_routed.xml"
    path.write_text(text)
    return path


async def run_sipp(tmp_path: Path, target: tuple[str, int], scenario: Path, timeout: float = 60) -> tuple[int, str]:
    (tmp_path / "pcap").symlink_to(CAPTURES)
    cmd = [SIPP or "sipp", "-sf", str(scenario), f"{target[0]}:{target[1]}", "-i", "127.0.0.1",
           "-p", str(free_port()), "-mi", "127.0.0.1", "-mp", str(free_port()), "-s", "echo", "-nostdin",
           "-m", "1", "-timeout", f"{int(timeout)}s", "-timeout_error", "-recv_timeout", "20s"]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode("utf-8", "replace")


async def proxy_up(proxy: tuple[str, int], timeout: float = 15.0) -> None:
    """OPTIONS through the proxy until voxline's 200 comes back through it."""
    uac = Uac(proxy)
    await uac.start()
    try:
        async with asyncio.timeout(timeout):
            n = 0
            while True:
                n += 1
                uac.call_id = f"probe-{n}@127.0.0.1"
                uac.send(uac.request("OPTIONS", branch=f"probe{n}"))
                try:
                    if (await uac.final("OPTIONS", timeout=0.5)).status == 200:
                        return
                except TimeoutError:
                    pass
    finally:
        uac.close()


async def test_sipp_through_kamailio_audio_dtmf_and_bye_routed_through_it(
        service: tuple[Any, SipDoor], kamailio: tuple[str, int], tmp_path: Path) -> None:  # noqa: F811
    app, door = service
    await proxy_up(kamailio)
    watch = Watch(app)
    try:
        rc, out = await run_sipp(tmp_path, kamailio, routed_scenario(tmp_path))
        assert rc == 0, out[-2000:]
        await released(app, door)
    finally:
        await watch.close()
    (session,) = watch.sessions.values()
    digits = [e["data"]["digit"] for e in watch.events[session.id] if e["kind"] == "dtmf"]
    assert digits == ["1"]
    stats = session.endpoint.stats()
    assert stats["jitter_buffer"]["played"] >= 230 and stats["sent"] > 200
    assert session.end_reason == "hangup: BYE"  # sipp's BYE, loose-routed through the proxy


async def test_voxline_ending_the_call_sends_its_bye_through_the_proxy(
        service: tuple[Any, SipDoor], kamailio: tuple[str, int]) -> None:  # noqa: F811
    app, door = service
    await proxy_up(kamailio)
    uac = Uac(kamailio)
    await uac.start()
    try:
        ok = await uac.call()
        assert ok.status == 200 and ok.record_routes, "the proxy record-routed the call"
        assert any(str(kamailio[1]) in r for r in uac.route_set)
        (session,) = app[SESSIONS].list()
        await asyncio.sleep(0.5)
        await session.end("api")
        async with asyncio.timeout(10):
            while True:
                data, source = await uac.sip.queue.get()
                bye = parse_message(data)
                if isinstance(bye, Request) and bye.method == "BYE":
                    break
        assert source == kamailio  # along the route set, not straight from voxline
        assert bye.call_id == uac.call_id
        assert uac.sip.transport is not None
        uac.sip.transport.sendto(bytes(make_response(bye, 200)), source)
        await released(app, door)
    finally:
        uac.close()

"""The service under test: one started in this process (the same app, runtime
and doors as ``voxline serve``, on free loopback ports), or a running one at a URL."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from voxline import __version__
from voxline.config import ServiceConfig, load_config
from voxline.control.app import STATE, create_app, mark_listening

from .delay import delay_runtime
from .lines.base import Target

__all__ = ["embedded", "describe", "free_port"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_tcp_port() -> int:
    """A loopback port free for both UDP and TCP now (SIP listens on both)."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no loopback port free for both UDP and TCP")


@contextlib.asynccontextmanager
async def embedded(config_path: str | None = None, overrides: dict[str, Any] | None = None,
                   delay: float = 0.3, bargein: float = 0.2,
                   ready_timeout: float = 600.0) -> AsyncIterator[Target]:
    """Run voxline in this process on loopback; yields where to call it.

    The runtime is the service's own with the synthetic ``delay`` agent added."""
    settings: dict[str, Any] = {"host": "127.0.0.1", "http_port": free_port(), "audiosocket_port": free_port(),
                                "sip_port": free_udp_tcp_port(), "sessions_per_minute": 100000, "session_burst": 10000,
                                "max_sessions_per_token": 0, "max_pending_per_token": 1000,
                                **(overrides or {})}
    config: ServiceConfig = load_config(config_path, None, settings)
    app = create_app(config, delay_runtime(delay, bargein))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.http_port)
        await site.start()
        mark_listening(app)
        start = app[STATE].start_task
        if start is not None:
            await asyncio.wait_for(start, ready_timeout)
        token = config.api_tokens[0] if config.api_tokens else None
        yield Target(url=f"http://{config.host}:{config.http_port}", token=token,
                     audiosocket=(config.audiosocket_host, config.audiosocket_port), app=app,
                     extra={"config": _config_summary(config), "sip": (config.sip_host, config.sip_port)})
    finally:
        await runner.cleanup()


def _config_summary(config: ServiceConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"agent": config.agent, "vad": config.vad, "max_sessions": config.max_sessions}
    prov = getattr(config, "providers", None)
    if prov is not None:
        for kind in ("stt", "llm", "tts"):
            part = getattr(prov, kind, None)
            if part is not None:
                out[kind] = {k: v for k, v in vars(part).items() if isinstance(v, str | int | float | bool)} \
                    if hasattr(part, "__dict__") else str(part)
    return out


async def describe(target: Target) -> dict[str, Any]:
    """The service's version (from its OpenAPI document) and readiness."""
    out: dict[str, Any] = {"url": target.url, "embedded": target.app is not None}
    if target.app is not None:
        out["version"] = __version__
        out["config"] = target.extra.get("config", {})
    async with aiohttp.ClientSession() as http:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with http.get(f"{target.url}/openapi.json", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                doc = await resp.json(loads=orjson.loads)
                out["version"] = doc.get("info", {}).get("version", out.get("version"))
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with http.get(f"{target.url}/readyz", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                out["ready"] = resp.status == 200
    return out

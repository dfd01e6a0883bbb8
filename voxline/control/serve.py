"""``voxline serve``: run the control API (and through the runtime, the calls) until told to stop.

Startup: refuse to expose an unauthenticated API (no tokens and a non-loopback
address is a ConfigError, before anything binds); build the app; bind; log the URL
to open. Models load in the background (see app.py) so /healthz answers at once
and /readyz turns 200 when they are loaded.

Shutdown on SIGTERM or SIGINT: stop admitting (the registry drains, /readyz says
503 so a load balancer stops sending), let calls finish for up to
``drain_timeout``, end the rest, then close the server and the runtime. A second
signal skips the rest of the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from voxline.config import ConfigError, ServiceConfig

from .app import METRICS, SESSIONS, STATE, RuntimeFactory, create_app, mark_listening
from voxline.providers.trim import trim_memory

from .connections import CappedSite, fit_descriptors

__all__ = ["serve", "run", "check_exposure", "is_loopback"]

log = logging.getLogger(__name__)

TRIM_PERIOD = 30.0  # s between returns of freed heap to the system (see providers/executor.py)
SHUTDOWN_TIMEOUT = 10.0  # s for in-flight HTTP requests once the sessions are gone
CLEANUP_TIMEOUT = 30.0  # s for the whole server and runtime teardown


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname may resolve anywhere: treat it as exposed


def check_exposure(config: ServiceConfig) -> None:
    """ConfigError if the API would be reachable from other machines without auth."""
    if not config.auth_enabled and not is_loopback(config.host):
        raise ConfigError(
            f"refusing to serve on {config.host or 'all addresses'} without authentication: "
            "set api_tokens (VOXLINE_API_TOKENS) or jwt_public_key (VOXLINE_JWT_PUBLIC_KEY), "
            "or bind to 127.0.0.1"
        )


def _url(host: str, port: int) -> str:
    shown = host if host and host not in ("0.0.0.0", "::") else "<this machine's address>"
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


async def serve(
    config: ServiceConfig,
    runtime_factory: RuntimeFactory | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Serve until a signal (or ``stop``); 0 after a clean shutdown, 1 if startup failed."""
    check_exposure(config)
    app = create_app(config, runtime_factory)
    loop = asyncio.get_running_loop()
    stop = stop if stop is not None else asyncio.Event()
    hurry = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: int) -> None:
        log.info("%s received", signal.Signals(signum).name)
        (hurry if stop.is_set() else stop).set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    # keepalive_timeout: a connection with no request in progress (idle, or its head
    # still arriving) is closed after http_idle_timeout; see connections.py.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT,
                           keepalive_timeout=config.http_idle_timeout)
    code = 0
    try:
        try:
            await runner.setup()  # enters the cleanup contexts: the runtime starts loading
        except ConfigError:
            raise
        except Exception:
            log.exception("startup failed")
            return 1
        try:
            limit = fit_descriptors(config.max_connections, config.max_sessions)
            site = CappedSite(runner, config.host, config.http_port, limit=limit,
                              on_refused=app[METRICS].connections_refused.inc)
            await site.start()
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", config.host, config.http_port, exc)
            return 1
        mark_listening(app)
        port = runner.addresses[0][1] if runner.addresses else config.http_port
        log.info("voxline listening: open %s in a browser (agent %s)", _url(config.host, port), config.agent)
        if not config.auth_enabled:
            log.warning("auth is off: no API tokens configured; serving on loopback %s only", config.host)
        trimming = asyncio.create_task(_trim_now_and_then(), name="trim-memory")
        try:
            code = await _until_stopped(app, stop)
            await _drain(app, config.drain_timeout, hurry)
        finally:
            trimming.cancel()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        try:
            await asyncio.wait_for(runner.cleanup(), CLEANUP_TIMEOUT)
        except TimeoutError:
            log.error("shutdown did not finish within %.0f s", CLEANUP_TIMEOUT)
            code = code or 1
    log.info("voxline stopped")
    return code


async def _trim_now_and_then() -> None:
    """Memory freed after a burst (calls ended, a flood of connections gone) goes
    back to the system within ``TRIM_PERIOD``, not never."""
    while True:
        await asyncio.sleep(TRIM_PERIOD)
        try:
            await asyncio.to_thread(trim_memory)
        except Exception:
            log.exception("returning memory to the system failed")


def settle_garbage() -> None:
    """Once started: what was loaded (modules, models, the app) leaves the collector.

    Everything alive now lives as long as the process, yet each full collection
    would walk it again, and a busy call path allocates enough to trigger one
    every second or so: frozen, a collection walks only what calls made since."""
    gc.collect()
    gc.freeze()


async def _until_stopped(app: web.Application, stop: asyncio.Event) -> int:
    """Wait for the stop signal; 1 at once if the runtime fails to start."""
    start = app[STATE].start_task
    stopped = asyncio.ensure_future(stop.wait())
    try:
        if start is not None:
            await asyncio.wait({stopped, start}, return_when=asyncio.FIRST_COMPLETED)
            if start.done() and not start.cancelled() and start.exception() is not None:
                log.error("runtime failed to start; shutting down")
                return 1
            if start.done():
                settle_garbage()
                log.info("ready")
        await stopped
        return 0
    finally:
        stopped.cancel()


async def _drain(app: web.Application, timeout: float, hurry: asyncio.Event) -> None:
    sessions = app[SESSIONS]
    sessions.draining = True
    log.info("draining: %d session(s), up to %.0f s", len(sessions), timeout)
    drain = asyncio.ensure_future(sessions.drain(timeout))
    hurried = asyncio.ensure_future(hurry.wait())
    # drain() ends every remaining session itself after ``timeout``: a bounded wait.
    await asyncio.wait({drain, hurried}, return_when=asyncio.FIRST_COMPLETED)
    hurried.cancel()
    if not drain.done():
        log.info("second signal: ending the remaining sessions now")
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain
        await sessions.drain(0.0)
    elif drain.exception() is not None:
        log.error("drain failed", exc_info=drain.exception())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(config: ServiceConfig, runtime_factory: RuntimeFactory | None = None) -> int:
    """Run ``serve`` on uvloop where installed (a loop factory: no global policy change)."""
    factory = _loop_factory()
    log.debug("event loop: %s", "uvloop" if factory is not None else "asyncio")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(config, runtime_factory))

"""`python -m <service> [api|worker]`: the same entry point for every service."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import time
from collections.abc import Callable
from types import FrameType

import uvicorn
from fastapi import FastAPI

from common.kafka import KafkaAccessError, check_access
from common.logs import configure_logging
from common.runtime import ServiceRuntime
from common.settings import ServiceSettings


def run_service(
    *,
    settings: ServiceSettings,
    build_runtime: Callable[[ServiceSettings], ServiceRuntime],
    build_app: Callable[[ServiceRuntime], FastAPI],
) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {settings.service_name}")
    parser.add_argument(
        "mode",
        nargs="?",
        default="api",
        choices=["api", "worker", "migrate"],
        help="api: HTTP API (plus relay and consumers unless CDT_RUN_WORKERS=false); "
        "worker: relay and consumers only; migrate: apply migrations and exit",
    )
    mode = parser.parse_args().mode
    configure_logging(service=settings.service_name, level=settings.log_level)
    if mode != "migrate":
        refuse_wrong_kafka_credentials(settings)
    runtime = build_runtime(settings)
    if mode != "migrate":
        settle_heap()
    if mode == "api":
        config = uvicorn.Config(
            build_app(runtime),
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,
            server_header=False,  # no "server: uvicorn" (API8: no stack fingerprinting)
            timeout_graceful_shutdown=GRACEFUL_TIMEOUT_SECONDS,
        )
        # uvicorn re-raises the signal once it has shut down gracefully, which would end the
        # process "killed by SIGTERM"; a completed drain is a clean stop, so exit status 0.
        signal.signal(signal.SIGTERM, lambda *_: None)
        DrainingServer(config, runtime=runtime, delay=settings.shutdown_delay_seconds).run()
    elif mode == "worker":
        asyncio.run(run_worker(runtime))
    else:
        asyncio.run(runtime.migrate())


def refuse_wrong_kafka_credentials(settings: ServiceSettings) -> None:
    """Exit at once, with the broker's reason in one line, when it refuses our credentials (a
    wrong password would otherwise look like a broker that is down, retried for ever)."""
    try:
        asyncio.run(check_access(settings))
    except KafkaAccessError as refused:
        raise SystemExit(f"{settings.service_name}: {refused}") from None


GRACEFUL_TIMEOUT_SECONDS = 20
# Young-generation threshold: a 1,000-event batch request allocates tens of thousands of
# containers that live for the request; collected every 700 allocations (the default) they were
# promoted, and promoted objects trigger full collections.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Keep the start-up heap (modules, the app, validators, ~130,000 objects) out of garbage
    collection, and collect the young generation less often.

    Under batch load an API process ran a full collection every second or so, 100-250 ms each,
    finding nothing to free: a quarter of its CPU per event, and stalls of single requests.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


class DrainingServer(uvicorn.Server):
    """uvicorn with a readiness drain: on SIGTERM/SIGINT `/readyz` turns 503 at once while the
    API keeps serving for `delay` seconds (the load balancer notices and stops routing here);
    then uvicorn stops accepting, lets in-flight requests finish (up to 20 s) and the lifespan
    drains the runtime (consumers commit the batch in hand, the relay stops). A second signal
    during the delay stops at once.
    """

    def __init__(self, config: uvicorn.Config, *, runtime: ServiceRuntime, delay: float) -> None:
        super().__init__(config)
        self._runtime = runtime
        self._delay = delay
        self._exit_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._delay > 0 and self._exit_at is None and not self.should_exit:
            self._runtime.draining = True
            self._exit_at = time.monotonic() + self._delay
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)


async def run_worker(runtime: ServiceRuntime) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start(workers=True)
    await stop.wait()
    await runtime.stop()

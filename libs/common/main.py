"""`python -m <service> [api|worker]`: the same entry point for every service."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

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
    runtime = build_runtime(settings)
    if mode == "api":
        uvicorn.run(
            build_app(runtime),
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=20,
        )
    elif mode == "worker":
        asyncio.run(run_worker(runtime))
    else:
        asyncio.run(runtime.migrate())


async def run_worker(runtime: ServiceRuntime) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start(workers=True)
    await stop.wait()
    await runtime.stop()

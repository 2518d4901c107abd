"""One stack (own Postgres + Kafka + the four services as processes) for all fault tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from common.kafka import ensure_topics
from common.kafka_access import provision_services
from common.settings import KafkaSettings
from tests.faults.stack import PROCESSES, Stack


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def stack(workdir: Path) -> AsyncIterator[Stack]:
    started = time.monotonic()
    stack = Stack(workdir / "faults")
    await asyncio.to_thread(stack.start_infra)
    try:
        await ensure_topics(stack.bootstrap)
        admin = KafkaSettings(kafka_bootstrap_servers=stack.bootstrap)  # the superuser
        stack.kafka_passwords = await provision_services(admin)
        stack.build_env()
        # Migrations take an advisory lock per schema, so API and worker may start together.
        for label in PROCESSES:
            stack[label].start()
        await stack.wait_ready("teams", "activities", "scoring", "notifications")
        await stack.seed()
        print(f"\n[faults] stack up and seeded in {time.monotonic() - started:.1f} s")
        yield stack
    finally:
        await asyncio.to_thread(stack.stop_all)
        if stack.engine is not None:
            await stack.engine.dispose()
        await asyncio.to_thread(stack.stop_infra)
        if keep := os.environ.get("CDT_FAULTS_LOGS"):  # debugging: keep the process logs
            for log in stack.root.glob("*.log"):
                shutil.copy(log, Path(keep) / log.name)

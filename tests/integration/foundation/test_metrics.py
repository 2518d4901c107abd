"""The pipeline's health in numbers: the metrics exist on /metrics and move."""

from __future__ import annotations

import signal
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from common.app import create_app
from tests.helpers import eventually, running
from tests.integration.foundation import plumbing
from tests.integration.foundation.test_outbox_and_consumer import event, make_topics, send_raw


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def group_lag(text: str, group: str) -> float:
    return sum(v for k, v in samples(text, "cdt_consumer_lag").items() if ("group", group) in k)


async def test_consumer_lag_rises_while_stopped_and_falls_after_restart(
    engine, producer, infra, subprocess_env
) -> None:  # type: ignore[no-untyped-def]
    topic = await make_topics(infra, "lag", "g-lag")
    # The API process watches lag; the consumer runs in a separate worker process.
    runtime = plumbing.build_runtime(topic="lag", group="g-lag", lag_interval=0.3)
    app = create_app(runtime=runtime, routers=[], title="plumbing", description="test")
    async with running(runtime, app, workers=False) as client:
        for seq in range(50):
            await send_raw(producer, event(key=f"k{seq % 5}", seq=seq, topic=topic))

        async def lag_is(expected: float) -> bool:
            return group_lag((await client.get("/metrics")).text, "g-lag") == expected

        await eventually(lambda: lag_is(50), timeout=15, what="lag of 50 with no consumer")

        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.foundation.plumbing"],
            env={**subprocess_env, "PLUMBING_TOPIC": "lag", "PLUMBING_GROUP": "g-lag"},
        )
        try:
            await eventually(lambda: lag_is(0), timeout=60, what="lag back to 0")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)

        text = (await client.get("/metrics")).text
        for name in (
            "cdt_http_requests_total",
            "cdt_http_request_duration_seconds_bucket",
            "cdt_outbox_backlog",
            "cdt_outbox_oldest_age_seconds",
        ):
            assert name in text, name
        requests = samples(text, "cdt_http_requests_total")
        assert any(("route", "/metrics") in k and v >= 2 for k, v in requests.items())

"""What the broker and the database alone can do on this machine, for the report's ratios.

- Kafka: Apache Kafka's own `ProducerPerformance` tool, from the same Maven artifacts as the broker,
  with the settings our relay uses (acks=all, idempotence).
- PostgreSQL: a COPY of rows shaped like our activity rows into an unlogged scratch table.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from common.kafka import java_client_properties
from devstack.kafka import resolve_classpath


@dataclass(frozen=True)
class Calibration:
    kafka_records_per_s: float
    kafka_mb_per_s: float
    postgres_copy_rows_per_s: float


def kafka_producer_perf(
    bootstrap: str, *, records: int = 200_000, record_size: int = 600, topic: str = "calibration.v1"
) -> tuple[float, float]:
    libs = resolve_classpath()
    # The credentials go in a file of the owner's only: not on a command line that `ps` shows
    # and a failure would print, and not split at their own "=" as --producer-props does.
    with tempfile.NamedTemporaryFile("w", suffix=".properties") as config:
        config.write("\n".join([f"bootstrap.servers={bootstrap}", *java_client_properties(), ""]))
        config.flush()
        done = subprocess.run(
            [
                "java",
                "-Xmx256m",
                "-cp",
                f"{libs}/*",
                "org.apache.kafka.tools.ProducerPerformance",
                "--topic",
                topic,
                "--num-records",
                str(records),
                "--record-size",
                str(record_size),
                "--throughput",
                "-1",
                "--producer.config",
                config.name,
                "--producer-props",
                "acks=all",
                "enable.idempotence=true",
                "linger.ms=5",
            ],
            capture_output=True,
            text=True,
            check=False,
            # A healthy local broker takes ~1 s per 50k records; a stuck one must not stall.
            timeout=60 + records / 1_000,
        )
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"ProducerPerformance exited with {done.returncode}: {reason[0]}")
    summary = done.stdout.strip().splitlines()[-1]
    match = re.search(r"([\d.]+) records/sec \(([\d.]+) MB/sec\)", summary)
    if match is None:
        raise RuntimeError(f"unexpected ProducerPerformance output: {summary}")
    return float(match.group(1)), float(match.group(2))


async def postgres_copy(database_url: str, *, rows: int = 200_000) -> float:
    connection = await asyncpg.connect(
        database_url.replace("postgresql+asyncpg://", "postgresql://")
    )
    try:
        await connection.execute(
            "CREATE UNLOGGED TABLE IF NOT EXISTS public.calibration_copy ("
            "id uuid, team_id uuid, member_id uuid, occurred_at timestamptz, kind text,"
            " skills text[], citizens_reached int, household_hash text, payload jsonb)"
        )
        await connection.execute("TRUNCATE public.calibration_copy")
        team, member, now = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)
        records = [
            (
                uuid.uuid4(),
                team,
                member,
                now,
                "household_visit",
                ["public_services"],
                3,
                "h" * 64,
                '{"app_installs": 1}',
            )
            for _ in range(rows)
        ]
        started = time.perf_counter()
        await connection.copy_records_to_table(
            "calibration_copy", schema_name="public", records=records
        )
        elapsed = time.perf_counter() - started
        await connection.execute("DROP TABLE public.calibration_copy")
        return rows / elapsed
    finally:
        await connection.close()


CALIBRATION_TOPIC = "loadtest.calibration.v1"


async def kafka_producer_perf_async(bootstrap: str, *, records: int) -> tuple[float, float]:
    """ProducerPerformance into a scratch topic shaped like ours (12 partitions), then dropped:
    the broker does not auto-create topics."""
    from aiokafka.admin import AIOKafkaAdminClient

    from common.kafka import (
        ensure_topics,
        kafka_client_options,
    )
    from common.topics import TopicSpec

    await ensure_topics(bootstrap, specs=[TopicSpec(CALIBRATION_TOPIC, partitions=12)])
    try:
        return await asyncio.to_thread(
            kafka_producer_perf, bootstrap, records=records, topic=CALIBRATION_TOPIC
        )
    finally:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_client_options())
        await admin.start()
        try:
            await admin.delete_topics([CALIBRATION_TOPIC])
        except Exception:
            pass
        finally:
            await admin.close()


async def calibrate(*, bootstrap: str, database_url: str, records: int = 200_000) -> Calibration:
    kafka_rate, kafka_mb = kafka_producer_perf(bootstrap, records=records)
    copy_rate = await postgres_copy(database_url, rows=records)
    return Calibration(
        kafka_records_per_s=kafka_rate, kafka_mb_per_s=kafka_mb, postgres_copy_rows_per_s=copy_rate
    )

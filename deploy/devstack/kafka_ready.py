"""Is the broker answering metadata requests (not merely listening)?"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient

from common.kafka import kafka_client_options
from common.settings import KafkaSettings


async def _describe(bootstrap_servers: str, client_env: dict[str, str]) -> bool:
    settings = KafkaSettings.model_validate(client_env)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=3000,
        **kafka_client_options(settings),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout=5)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout=5)
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        await admin.close()


def broker_answers(bootstrap_servers: str, client_env: dict[str, str]) -> bool:
    """`client_env`: the `CDT_KAFKA_*` settings of the client that asks."""
    return asyncio.run(_describe(bootstrap_servers, client_env))

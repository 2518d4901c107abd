"""Is the broker answering metadata requests (not merely listening)?"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient


async def _describe(bootstrap_servers: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), timeout=5)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout=5)
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        await admin.close()


def broker_answers(bootstrap_servers: str) -> bool:
    return asyncio.run(_describe(bootstrap_servers))

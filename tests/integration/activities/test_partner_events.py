"""Partner changes reach `activities.partner.v1` (other services authenticate partner reads
from it): created, rotated and revoked, each with the key's digest and never the key."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select

from activities.adapters import service_tables
from common.contracts.activities import PartnerChanged
from tests.helpers import OPERATOR, headers_of, read_topic
from tests.integration.activities.support import Env


def _events_of(records: list[Any], partner_id: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records if r.key == partner_id.encode()]


async def test_create_rotate_revoke_publish_partner_changed(env: Env) -> None:
    created = await env.partner(provinces=["86", "82"])
    partner_id = created["id"]
    rotated = await env.client.post(f"/v1/partners/{partner_id}:rotate-key", headers=OPERATOR)
    assert rotated.status_code == 200
    revoked = await env.client.delete(f"/v1/partners/{partner_id}", headers=OPERATOR)
    assert revoked.status_code == 204

    records = await read_topic(
        env.bootstrap,
        PartnerChanged.TOPIC.name,
        until=lambda rs: len(_events_of(rs, partner_id)) >= 3,
    )
    first, second, third = _events_of(records, partner_id)
    old_key, new_key = created["api_key"], rotated.json()["api_key"]

    assert first["provinces"] == ["82", "86"] and first["revoked"] is False
    assert first["key_lookup"] == old_key.split("_")[1]
    assert first["key_sha256"] == hashlib.sha256(old_key.encode()).hexdigest()
    assert second["key_lookup"] == new_key.split("_")[1] and second["revoked"] is False
    assert second["key_sha256"] == hashlib.sha256(new_key.encode()).hexdigest()
    assert third["revoked"] is True and third["key_lookup"] == second["key_lookup"]
    assert first["version"] < second["version"] < third["version"]
    for record in records:
        if record.key == partner_id.encode():
            assert headers_of(record)["ce_type"] == PartnerChanged.CE_TYPE
            text = record.value.decode()
            assert old_key not in text and new_key not in text  # digests only


async def test_failed_rotation_publishes_nothing(env: Env) -> None:
    created = await env.partner()
    partner_id = created["id"]
    assert (
        await env.client.delete(f"/v1/partners/{partner_id}", headers=OPERATOR)
    ).status_code == 204
    refused = await env.client.post(f"/v1/partners/{partner_id}:rotate-key", headers=OPERATOR)
    assert refused.status_code == 404
    outbox = service_tables.outbox
    async with env.runtime.sessions() as session:
        types = (
            await session.scalars(select(outbox.c.type).where(outbox.c.aggregateid == partner_id))
        ).all()
    assert types == [PartnerChanged.CE_TYPE] * 2  # created and revoked, not the refused rotation

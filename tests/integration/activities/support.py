"""Test support for the activities service: teams events produced straight to Kafka."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from activities.adapters import member_replica, team_replica
from common.contracts.teams import MemberChanged, TeamChanged, UnitPath
from common.envelope import OutboundEvent, kafka_headers
from common.runtime import ServiceRuntime
from tests.helpers import OPERATOR, eventually

PROVINCE = "82"
OTHER_PROVINCE = "01"
HMAC_KEY = "test-household-secret-0123456789"


@dataclass
class Env:
    client: httpx.AsyncClient
    runtime: ServiceRuntime
    producer: AIOKafkaProducer
    bootstrap: str

    async def send(self, contract: TeamChanged | MemberChanged) -> None:
        event = OutboundEvent.of(contract, source="/cdt/teams", subject=str(contract.id))
        await self.producer.send_and_wait(
            contract.TOPIC.name,
            key=event.key.encode(),
            value=json.dumps(event.data).encode(),
            headers=kafka_headers(event.ce_headers()),
        )

    async def team(
        self,
        *,
        province: str = PROVINCE,
        established_on: date | None = date(2022, 4, 1),
        status: str = "active",
        version: int = 1,
        team_id: uuid.UUID | None = None,
        wait: bool = True,
        **extra: Any,
    ) -> uuid.UUID:
        team_id = team_id or uuid.uuid4()
        await self.send(
            TeamChanged(
                id=team_id,
                code=f"T-{team_id.hex[:8]}",
                name="Tổ CNSCĐ ấp 1",
                unit_code=f"{province}-28000-V01",
                unit_path=UnitPath(
                    province=province, commune=f"{province}-28000", village=f"{province}-28000-V01"
                ),
                status=status,  # type: ignore[arg-type]
                established_on=established_on,
                version=version,
                changed_at=datetime.now(UTC),
                **extra,
            )
        )
        if wait:
            await self.replicated(team_replica, team_id, version)
        return team_id

    async def member(
        self,
        team_id: uuid.UUID,
        *,
        joined_on: date = date(2022, 4, 1),
        left_on: date | None = None,
        version: int = 1,
        member_id: uuid.UUID | None = None,
        removed: bool = False,
    ) -> uuid.UUID:
        member_id = member_id or uuid.uuid4()
        await self.send(
            MemberChanged(
                id=member_id,
                team_id=team_id,
                role="member",
                affiliation="youth_union",
                joined_on=joined_on,
                left_on=left_on,
                removed=removed,
                version=version,
                changed_at=datetime.now(UTC),
            )
        )
        await self.replicated(member_replica, member_id, version)
        return member_id

    async def replicated(self, table: Any, entity_id: uuid.UUID, version: int) -> None:
        async def check() -> bool:
            async with self.runtime.sessions() as session:
                found = await session.scalar(select(table.c.version).where(table.c.id == entity_id))
            return found is not None and found >= version

        await eventually(check, what=f"{table.name} {entity_id} v{version}")

    async def partner(self, provinces: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        reply = await self.client.post(
            "/v1/partners",
            json={"name": "e-Đồng Tháp app", "provinces": provinces or [PROVINCE], **extra},
            headers=OPERATOR,
        )
        assert reply.status_code == 201, reply.text
        body: dict[str, Any] = reply.json()
        return body


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def activity(
    team_id: uuid.UUID, member_id: uuid.UUID | None = None, **overrides: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "team_id": str(team_id),
        "occurred_at": (datetime.now(UTC) - timedelta(days=1)).astimezone().isoformat(),
        "kind": "household_visit",
        "skills": ["public_services", "online_payment"],
        "citizens_reached": 3,
        "household_ref": "HH-0001",
        "audience": ["elderly"],
        "campaign_id": None,
        "outcomes": {"public_service_accounts": 1, "app_installs": 1, "ewallet_accounts": 0},
    }
    if member_id is not None:
        body["member_id"] = str(member_id)
    body.update(overrides)
    return body

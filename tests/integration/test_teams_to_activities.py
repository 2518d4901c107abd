"""The one real event path of the foundation: a team created in teams reaches activities'
replica through the outbox, the relay, Kafka and the consumer runner, exactly once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from sqlalchemy import func, select

from activities import bootstrap as activities_bootstrap
from activities.adapters import team_replica
from activities.settings import ActivitiesSettings
from common import topics
from teams import bootstrap as teams_bootstrap
from teams.adapters import service_tables as teams_tables
from teams.adapters import teams_table
from teams.settings import TeamsSettings
from tests.helpers import OPERATOR, eventually, headers_of, read_topic, running


@pytest_asyncio.fixture(scope="module")
async def services(apply_env: None) -> AsyncIterator[tuple[httpx.AsyncClient, object, object]]:
    teams_rt = teams_bootstrap.build_runtime(TeamsSettings())
    activities_rt = activities_bootstrap.build_runtime(ActivitiesSettings())
    async with (
        running(teams_rt, teams_bootstrap.build_app(teams_rt)) as teams_client,
        running(activities_rt, activities_bootstrap.build_app(activities_rt)),
    ):
        imported = await teams_client.post(
            "/v1/admin-units:import", json={"source": "vietnam-provinces"}, headers=OPERATOR
        )
        assert imported.status_code == 200, imported.text
        yield teams_client, teams_rt, activities_rt


def new_team(**overrides: object) -> dict[str, object]:
    code = f"T-{uuid.uuid4().hex[:10]}"
    return {
        "code": code,
        "name": "Tổ CNSCĐ ấp 1",
        "unit_code": "28261",
        "established_on": "2022-04-01",
        "decision_no": "12/QĐ-UBND",
        **overrides,
    }


async def test_team_reaches_activities_replica(services, infra) -> None:  # type: ignore[no-untyped-def]
    client, _, activities_rt = services
    reply = await client.post("/v1/teams", json=new_team(), headers=OPERATOR)
    assert reply.status_code == 201, reply.text
    team_id = uuid.UUID(reply.json()["id"])

    async def replicated() -> object:
        async with activities_rt.sessions() as session:
            return (
                await session.execute(select(team_replica).where(team_replica.c.id == team_id))
            ).first()

    # Generous: in the full suite the group first works through earlier modules' backlog.
    row = await eventually(replicated, timeout=90, what="team in activities replica")
    assert row.code == reply.json()["code"]
    assert row.status == "active"


async def test_write_and_outbox_row_commit_together(services) -> None:  # type: ignore[no-untyped-def]
    client, teams_rt, _ = services
    body = new_team()
    assert (await client.post("/v1/teams", json=body, headers=OPERATOR)).status_code == 201
    duplicate = await client.post("/v1/teams", json={**body, "name": "other"}, headers=OPERATOR)
    assert duplicate.status_code == 409
    assert duplicate.headers["content-type"] == "application/problem+json"

    outbox = teams_tables.outbox
    async with teams_rt.sessions() as session:
        team_ids = (
            await session.scalars(
                select(teams_table.c.id).where(teams_table.c.code == body["code"])
            )
        ).all()
        events = await session.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.aggregateid == str(team_ids[0]))
        )
    assert len(team_ids) == 1
    assert events == 1  # the rejected duplicate wrote neither a team nor an event


async def test_unit_of_work_rolls_back_state_and_events_together(services) -> None:  # type: ignore[no-untyped-def]
    _, teams_rt, _ = services
    from common.envelope import OutboundEvent
    from teams.adapters import TeamRepository
    from teams.domain import Team

    team = Team.establish(
        code=f"RB-{uuid.uuid4().hex[:8]}",
        name="x",
        unit_code="82",
        established_on=None,
        decision_no=None,
    )
    try:
        async with teams_rt.unit_of_work() as uow:
            await TeamRepository(uow.session).add(team)
            uow.publish(OutboundEvent.of(team.changed_event(), source="/test"))
            await uow.flush_events()
            raise RuntimeError("domain failure after the writes")
    except RuntimeError:
        pass
    async with teams_rt.sessions() as session:
        assert (
            await session.scalar(
                select(func.count()).select_from(teams_table).where(teams_table.c.id == team.id)
            )
            == 0
        )
        assert (
            await session.scalar(
                select(func.count())
                .select_from(teams_tables.outbox)
                .where(teams_tables.outbox.c.aggregateid == str(team.id))
            )
            == 0
        )


async def test_relay_publishes_cloudevents_with_traceparent(services, infra) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = services
    reply = await client.post("/v1/teams", json=new_team(), headers=OPERATOR)
    team_id = reply.json()["id"]

    records = await read_topic(
        infra.kafka_bootstrap_servers,
        topics.TEAMS_TEAM.name,
        until=lambda rs: any(r.key == team_id.encode() for r in rs),
    )
    record = next(r for r in records if r.key == team_id.encode())
    headers = headers_of(record)
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_type"] == "vn.cdt.teams.team.v1"
    assert headers["ce_source"] == "/cdt/teams"
    assert headers["ce_subject"] == team_id
    assert uuid.UUID(headers["ce_id"]).version == 7
    assert headers["content-type"] == "application/json"
    assert headers["ce_dataschema"].endswith("/schemas/vn.cdt.teams.team.v1.json")
    version, trace_id, _span_id, _flags = headers["traceparent"].split("-")
    assert version == "00" and len(trace_id) == 32 and int(trace_id, 16) != 0

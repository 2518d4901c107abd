"""What activities does with the events it consumes: keep the local replica of teams."""

from __future__ import annotations

from activities.adapters import upsert_member, upsert_team
from common.consumer import Handler, dispatch_by_type
from common.contracts.teams import MemberChanged, TeamChanged
from common.db import UnitOfWork
from common.envelope import InboundEvent


async def on_team_changed(uow: UnitOfWork, event: InboundEvent) -> None:
    await upsert_team(
        uow.session, event.parse(TeamChanged), traceparent=event.trace_headers.get("traceparent")
    )


async def on_member_changed(uow: UnitOfWork, event: InboundEvent) -> None:
    await upsert_member(uow.session, event.parse(MemberChanged))


def teams_replica_handler() -> Handler:
    return dispatch_by_type(
        {TeamChanged.CE_TYPE: on_team_changed, MemberChanged.CE_TYPE: on_member_changed}
    )

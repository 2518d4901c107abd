"""What activities does with the events it consumes."""

from __future__ import annotations

from activities.adapters import upsert_team
from common.consumer import Handler, dispatch_by_type
from common.contracts.teams import TeamChanged
from common.db import UnitOfWork
from common.envelope import InboundEvent


async def on_team_changed(uow: UnitOfWork, event: InboundEvent) -> None:
    await upsert_team(uow.session, event.parse(TeamChanged))


def teams_replica_handler() -> Handler:
    return dispatch_by_type({TeamChanged.CE_TYPE: on_team_changed})

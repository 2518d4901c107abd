"""What activities does with the events it consumes: keep the local replica of teams."""

from __future__ import annotations

from collections.abc import Sequence

from activities.adapters import upsert_members, upsert_teams
from common.consumer import Handler
from common.contracts.teams import MemberChanged, TeamChanged
from common.contracts.wire import MemberChangedWire, TeamChangedWire, parse_wire
from common.db import UnitOfWork
from common.envelope import InboundEvent


async def apply_replica(uow: UnitOfWork, events: Sequence[InboundEvent]) -> None:
    """A consumed batch in one statement per table: a registry import publishes hundreds of
    thousands of changes, which a statement per event applied at ~1,100 a second.

    Teams and members live in separate tables, so the batch's order matters only among the
    changes of one id, and there the newest version wins whatever the order (see
    `adapters.latest_versions`). Other event types (admin units) are not replicated here.
    """
    teams = [
        (parse_wire(e, TeamChangedWire), e.trace_headers.get("traceparent"))
        for e in events
        if e.type == TeamChanged.CE_TYPE
    ]
    members = [parse_wire(e, MemberChangedWire) for e in events if e.type == MemberChanged.CE_TYPE]
    await upsert_teams(uow.session, teams)
    await upsert_members(uow.session, members)


def teams_replica_handler() -> Handler:
    return apply_replica

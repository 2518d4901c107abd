"""What teams does with the events it consumes: keep a replica of activities' partner apps."""

from __future__ import annotations

from common.consumer import Handler, dispatch_by_type
from common.contracts.activities import PartnerChanged
from common.db import UnitOfWork
from common.envelope import InboundEvent
from teams.adapters import upsert_partner


async def on_partner_changed(uow: UnitOfWork, event: InboundEvent) -> None:
    await upsert_partner(uow.session, event.parse(PartnerChanged))


def partner_replica_handler() -> Handler:
    return dispatch_by_type({PartnerChanged.CE_TYPE: on_partner_changed})

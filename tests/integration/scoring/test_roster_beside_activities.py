"""Scoring reads the roster in a consumer group of its own: a roster batch that takes long (a
registry import) does not hold the live activities back."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

from tests.integration.scoring.conftest import (
    indicators,
    produce,
    wait_indicator,
    wait_processed,
)
from tests.unit.scoring import factory


async def test_live_activities_are_applied_while_a_roster_batch_is_held(
    scoring: Any, producer: Any
) -> None:
    _, runtime = scoring
    province = f"R{uuid.uuid4().hex[:6]}"
    team_id, other_team_id = uuid.uuid4(), uuid.uuid4()
    place = factory.path(province, f"{province}-C1", f"{province}-C1-V1")
    placed = [factory.team(team_id=t, unit_path=place) for t in (team_id, other_team_id)]
    await wait_processed(runtime, await produce(producer, *placed))
    period = factory.NOW.strftime("%Y-%m")
    async with runtime.sessions() as holder, holder.begin():
        # The roster consumer's next batch waits on this lock as it would behind a long import.
        await holder.execute(text("LOCK TABLE scoring.member_state IN EXCLUSIVE MODE"))
        member = factory.member(member_id=uuid.uuid4(), team_id=team_id)
        await produce(producer, member)
        # Another team's activity: the held batch has locked its own team, as an import does.
        await produce(producer, factory.activity(team_id=other_team_id, unit_path=place))
        await wait_indicator(runtime, ("province", province, period), "activities", 1)
        assert (await indicators(runtime, "team", str(team_id), period)).get("members", 0) == 0
        await holder.rollback()
    await wait_indicator(runtime, ("team", str(team_id), period), "members", 1)

"""Teams HTTP API (`/v1`)."""

from __future__ import annotations

from datetime import date
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from common.app import OperatorDep, UowDep
from common.envelope import OutboundEvent
from common.problems import ProblemError
from teams.adapters import TeamRepository
from teams.domain import Team

router = APIRouter(prefix="/v1", tags=["teams"])
SOURCE = "/cdt/teams"

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Code
    name: Annotated[str, Field(min_length=1, max_length=300)]
    unit_code: Code
    established_on: date | None = None
    decision_no: Annotated[str | None, Field(max_length=100)] = None


class TeamOut(BaseModel):
    id: UUID
    code: str
    name: str
    unit_code: str
    status: str
    established_on: date | None
    decision_no: str | None
    version: int


def _out(team: Team) -> TeamOut:
    return TeamOut(
        id=team.id,
        code=team.code,
        name=team.name,
        unit_code=team.unit_code,
        status=team.status,
        established_on=team.established_on,
        decision_no=team.decision_no,
        version=team.version,
    )


@router.post(
    "/teams",
    status_code=status.HTTP_201_CREATED,
    dependencies=[OperatorDep],
    responses={409: {"description": "duplicate code"}},
)
async def create_team(body: TeamCreate, uow: UowDep) -> TeamOut:
    repo = TeamRepository(uow.session)
    if await repo.code_exists(body.code):
        raise ProblemError(409, "Duplicate code", f"A team with code {body.code!r} exists.")
    team = Team.establish(
        code=body.code,
        name=body.name,
        unit_code=body.unit_code,
        established_on=body.established_on,
        decision_no=body.decision_no,
    )
    await repo.add(team)
    uow.publish(OutboundEvent.of(team.changed_event(), source=SOURCE, subject=str(team.id)))
    try:
        await uow.commit()
    except IntegrityError as exc:  # a concurrent create with the same code won the race
        raise ProblemError(
            409, "Duplicate code", f"A team with code {body.code!r} exists."
        ) from exc
    return _out(team)


@router.get("/teams/{team_id}", responses={404: {"description": "unknown team"}})
async def get_team(team_id: UUID, uow: UowDep) -> TeamOut:
    team = await TeamRepository(uow.session).get(team_id)
    if team is None:
        raise ProblemError(404, "Not Found", f"No team {team_id}.")
    return _out(team)

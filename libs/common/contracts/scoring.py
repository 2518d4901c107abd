"""Events of the scoring service: every score change (history), the latest (compacted), and the
evaluation rounds' transitions."""

from __future__ import annotations

from datetime import date, datetime
from typing import ClassVar, Literal
from uuid import UUID

from common import topics
from common.envelope import EventContract

SubjectType = Literal["team", "village", "commune", "district", "province", "national"]


class ScoreComponent(EventContract):
    criterion: str
    # The criteria group (activity, reach, skill_coverage, outcomes, capacity); optional, added.
    group: str | None = None
    points: float
    max_points: float
    value: float
    target: float


class ScoreUpdated(EventContract):
    TOPIC: ClassVar = topics.SCORE_UPDATED
    CE_TYPE: ClassVar = "vn.cdt.scoring.score-updated.v1"
    AGGREGATE: ClassVar = "score"

    subject_type: SubjectType
    subject_id: str
    period: str
    criteria_set: str
    score: float
    max_score: float = 100
    rank: int | None = None
    rank_of: int | None = None
    components: list[ScoreComponent] = []
    indicators: dict[str, float] = {}
    version: int
    as_of_event_time: datetime | None = None
    computed_at: datetime

    def event_key(self) -> str:
        return f"{self.subject_type}:{self.subject_id}:{self.period}"


class ScoreLatest(ScoreUpdated):
    TOPIC: ClassVar = topics.SCORE_LATEST
    CE_TYPE: ClassVar = "vn.cdt.scoring.score-latest.v1"


RoundState = Literal["open", "under_review", "approved", "reopened"]


class EvaluationRoundChanged(EventContract):
    """A round moved (or was opened): other government systems learn that a unit's review
    for a period is final (`approved`), or no longer final (`reopened`, with the reason)."""

    TOPIC: ClassVar = topics.EVALUATION_ROUND
    CE_TYPE: ClassVar = "vn.cdt.scoring.evaluation-round.v1"
    AGGREGATE: ClassVar = "evaluation_round"

    id: UUID
    level: SubjectType
    unit_code: str
    period: str
    criteria_set: str
    due_on: date
    state: RoundState
    previous_state: RoundState | None = None
    # how many times the round has been approved (the snapshot a report reads)
    approvals: int = 0
    actor: str
    reason: str | None = None
    version: int
    changed_at: datetime

"""What a score report shows people: its rows, its columns and their headers, as messages of the
catalogues (`common.i18n`: Vietnamese by default, English on request). Pure: the adapters read
the rows, the API renders JSON, CSV or XLSX."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from common.i18n import Language, Message, _
from scoring.domain import SUBJECT_TYPES

# Levels from the top: the order of a report's rows and of its sheets.
LEVELS_TOP_DOWN: tuple[str, ...] = tuple(reversed(SUBJECT_TYPES))
LEVEL_LABELS: dict[str, Message] = {
    "national": _("Nation"),
    "province": _("Province"),
    "district": _("District"),
    "commune": _("Commune"),
    "village": _("Village"),
    "team": _("Team"),
}


@dataclass(frozen=True)
class Column:
    key: str
    label: Message
    numeric: bool = False
    width: int = 12


BASE_COLUMNS: tuple[Column, ...] = (
    Column("level", _("Level"), width=18),
    Column("code", _("Code"), width=14),
    Column("name", _("Name"), width=36),
    Column("parent_code", _("Parent code"), width=14),
    Column("parent_name", _("Parent name"), width=30),
    Column("score", _("Score"), numeric=True, width=9),
    Column("max_score", _("Maximum score"), numeric=True, width=9),
    Column("rank", _("Rank"), numeric=True, width=9),
    Column("rank_of", _("Out of"), numeric=True, width=9),
)
INDICATOR_COLUMNS: tuple[Column, ...] = (
    Column("teams", _("Teams"), numeric=True),
    Column("members", _("Members"), numeric=True),
    Column(
        "trained_members",
        _("Trained members"),
        numeric=True,
    ),
    Column("active_teams", _("Active teams"), numeric=True),
    Column("active_members", _("Active members"), numeric=True),
    Column("activities", _("Activities"), numeric=True),
    Column("citizens_reached", _("Citizens reached"), numeric=True),
    Column(
        "households_visited",
        _("Households visited"),
        numeric=True,
    ),
    Column("skills_taught", _("Skills taught"), numeric=True),
)

INDICATOR_LABELS = {column.key: column.label for column in INDICATOR_COLUMNS}
INDICATOR_KEYS = tuple(INDICATOR_LABELS)


def component_column(criterion: str) -> Column:
    return Column(
        f"points:{criterion}", _("Points: {criterion}", criterion=criterion), numeric=True
    )


def report_columns(criteria: Sequence[str]) -> tuple[Column, ...]:
    """Every column of a report under a criteria set with these criteria (in their order)."""
    return (*BASE_COLUMNS, *(component_column(c) for c in criteria), *INDICATOR_COLUMNS)


Cell = str | float | int | None


@dataclass(frozen=True)
class ReportScope:
    """What a report covers: a unit's subjects for a period under a criteria set, live or as
    the round's `approval`-th snapshot froze them."""

    level: str
    unit_code: str
    period: str
    criteria_set: str
    round_id: UUID | None = None
    approval: int | None = None


@dataclass(frozen=True)
class ReportRow:
    """One subject of a report: a live score, or a round's frozen one."""

    level: str
    code: str
    name: str | None
    parent_code: str | None
    parent_name: str | None
    score: float | None
    max_score: float | None
    rank: int | None
    rank_of: int | None
    points: Mapping[str, float] = field(default_factory=dict)  # criterion -> points
    indicators: Mapping[str, float] = field(default_factory=dict)

    def cells(self, criteria: Sequence[str], language: Language) -> list[Cell]:
        """The row's cells under `report_columns(criteria)`, in their order (one list built
        in one go: a national sheet has 74,422 rows of ~30 cells)."""
        indicators = self.indicators
        return [
            LEVEL_LABELS[self.level].render(language),
            self.code,
            self.name,
            self.parent_code,
            self.parent_name,
            self.score,
            self.max_score,
            self.rank,
            self.rank_of,
            *[self.points.get(criterion) for criterion in criteria],
            *[_number(indicators.get(key)) for key in INDICATOR_KEYS],
        ]

    def as_json(self) -> dict[str, object]:
        return {
            "level": self.level,
            "code": self.code,
            "name": self.name,
            "parent_code": self.parent_code,
            "parent_name": self.parent_name,
            "score": self.score,
            "max_score": self.max_score,
            "rank": self.rank,
            "rank_of": self.rank_of,
            "points": dict(self.points),
            "indicators": {key: _number(self.indicators.get(key)) for key in INDICATOR_KEYS},
        }


def _number(value: float | None) -> float | int | None:
    """Counts as integers (Excel shows 12, not 12.0)."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


@dataclass(frozen=True)
class Coverage:
    covered: int  # units with at least one team
    total: int  # units known under the reviewed unit

    def pair(self) -> tuple[int, int]:
        return self.covered, self.total


@dataclass(frozen=True)
class Summary:
    """The reviewed unit's totals: the summary sheet of a report."""

    teams: int
    members: int
    trained_members: int
    villages: Coverage
    communes: Coverage

    def as_json(self) -> dict[str, object]:
        return {
            "teams": self.teams,
            "members": self.members,
            "trained_members": self.trained_members,
            "villages": {"covered": self.villages.covered, "total": self.villages.total},
            "communes": {"covered": self.communes.covered, "total": self.communes.total},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Summary:
        villages, communes = data["villages"], data["communes"]
        assert isinstance(villages, Mapping) and isinstance(communes, Mapping)
        return cls(
            teams=int(str(data["teams"])),
            members=int(str(data["members"])),
            trained_members=int(str(data["trained_members"])),
            villages=Coverage(int(villages["covered"]), int(villages["total"])),
            communes=Coverage(int(communes["covered"]), int(communes["total"])),
        )

    def lines(self, language: Language) -> list[tuple[str, Cell, Cell]]:
        """(label, value, out of) lines of the summary sheet."""
        figures: list[tuple[Message, Cell, Cell]] = [
            (INDICATOR_LABELS["teams"], self.teams, None),
            (INDICATOR_LABELS["members"], self.members, None),
            (INDICATOR_LABELS["trained_members"], self.trained_members, None),
            (_("Villages with a team"), *self.villages.pair()),
            (_("Communes with a team"), *self.communes.pair()),
        ]
        return [(label.render(language), value, total) for label, value, total in figures]


SUMMARY_HEADERS = (_("Figure"), _("Value"), _("Out of a total"))
SUMMARY_SHEET = _("Summary")


# The reporting-schedule table: which units approved their round on time.
SCHEDULE_STATUS_LABELS: dict[str, Message] = {
    "on_time": _("On time"),
    "late": _("Late"),
    "overdue": _("Overdue"),
    "pending": _("Not yet due"),
    "missing": _("No round opened"),
}
SCHEDULE_COLUMNS: tuple[Column, ...] = (
    Column("unit_code", _("Unit code"), width=12),
    Column("name", _("Unit name"), width=32),
    Column("status", _("Status"), width=20),
    Column("state", _("Round state"), width=16),
    Column("due_on", _("Due on"), width=14),
    Column("approved_at", _("Approved at"), width=22),
)
SCHEDULE_SHEET = _("Reporting schedule")


# Commendation candidates: a sheet of a round's report and a JSON list.
CANDIDATE_COLUMNS: tuple[Column, ...] = (
    *(c for c in BASE_COLUMNS if c.key != "max_score"),
    *(c for c in INDICATOR_COLUMNS if c.key == "activities"),
)
CANDIDATES_SHEET = _("Commendation candidates")
MEMBER_LABEL = _("Member")


def member_candidate_row(member: Mapping[str, Any]) -> list[Any]:
    """A member candidate in `CANDIDATE_COLUMNS` after the level: the member's id as code, no
    name (it stays in the teams service), the team as parent, no score, the rank by activities."""
    return [
        member["member_id"],
        None,
        member["team_code"],
        member["team_name"],
        None,
        member["rank"],
        member["rank_of"],
        member["activities"],
    ]

"""Parameters and checks the scoring API's routers share."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query
from pydantic import Field

from common.problems import ProblemError
from scoring import domain

SubjectTypeParam = Literal["team", "village", "commune", "district", "province", "national"]
Name = Annotated[str, Field(min_length=1, max_length=60, pattern=r"^[a-z][a-z0-9_]*$")]
Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
PeriodParam = Annotated[
    str,
    Query(
        min_length=4,
        max_length=80,
        pattern=domain.PERIOD_RE.pattern,
        description="2026-11 | 2026-Q4 | 2026 | campaign:<id>",
    ),
]
# A period in a request body (the query parameter's twin).
PeriodField = Annotated[
    str,
    Field(
        max_length=80,
        pattern=domain.PERIOD_RE.pattern,
        description="YYYY-MM, YYYY-Qn, YYYY or campaign:<id>",
    ),
]
# A criteria set's version: its name and number (`default@1`).
CriteriaVersion = Annotated[
    str, Field(max_length=80, pattern=r"^[a-z][a-z0-9_]*@[0-9]{1,9}$", examples=["default@1"])
]
MAX_PAGE = 500


def check_period(period: str) -> str:
    if not domain.is_valid_period(period):
        raise ProblemError.invalid("period", "expected YYYY-MM, YYYY-Qn, YYYY or campaign:<id>")
    return period

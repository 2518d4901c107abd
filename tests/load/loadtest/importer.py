"""`--import-during-load`: a bulk import through the teams service's public bulk APIs (the same
`POST /v1/teams:bulk` and `/v1/members:bulk` the fixture is loaded with) while live activities
keep arriving, so that the import's roster events (TeamChanged / MemberChanged on the compacted
teams topics) and the re-scoring they cause meet the live scores in the same pipeline.

The import is an additional slice of the registry: new teams in the fixture's villages, each
with 4 to 9 members (~73 % trained, as nationally), so every row changes the team, member and
trained-member indicators of its village, commune, province and the nation. Codes carry the
run's id (`LI<yyyymmdd-hhmmss>T…` / `…M…`): every run creates fresh rows (a re-import of the
same rows would change nothing and publish nothing), and the fixture's own codes (`LT…`, `LS…`)
and its roster are left alone, so the live load's teams and members stay valid. The slice stays
in the registry afterwards.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from tests.load.loadtest.fixture import TRAINED_SHARE, Plan, bulk_upload, team_sizes

# 10 % of the national registry (7,442 teams, ~35,000 members); at least 1,000 teams so that a
# smoke-scale fixture still sends thousands of roster events.
DEFAULT_SHARE = 0.1
DEFAULT_MINIMUM = 1_000


def default_teams(fixture_teams: int) -> int:
    return max(DEFAULT_MINIMUM, round(fixture_teams * DEFAULT_SHARE))


def slice_plan(plan: Plan, *, teams: int, tag: str) -> Plan:
    """`teams` new teams (and their members) in the fixture's villages, codes prefixed `tag`;
    deterministic from the fixture's seed and the tag."""
    r = random.Random(f"{plan.seed}:{tag}")
    villages = [code for code, _commune in plan.villages]
    units = [r.choice(villages) for _ in range(teams)]
    codes = [(f"{tag}T{n:06d}", unit) for n, unit in enumerate(units)]
    sizes = team_sizes(r, teams, None)
    trained = [r.random() < TRAINED_SHARE for _ in range(sum(sizes))]
    return Plan(
        scale=replace(plan.scale, code_prefix=tag),
        seed=plan.seed,
        provinces=plan.provinces,
        villages=[],
        teams=codes,
        team_sizes=sizes,
        trained=trained,
    )


async def run_import(
    *, teams_url: str, headers: dict[str, str], rows: Plan, say: Callable[[str], None]
) -> dict[str, Any]:
    """Teams, then their members, through the bulk APIs, on a connection of its own (the load's
    connection pool stays the load's). Returns rows, seconds and rows/s of the whole import."""
    started = time.perf_counter()
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        teams = await bulk_upload(
            client, f"{teams_url}/v1/teams:bulk", "text/csv", rows.team_rows, say, "import teams"
        )
        members = await bulk_upload(
            client,
            f"{teams_url}/v1/members:bulk",
            "application/x-ndjson",
            rows.member_rows,
            say,
            "import members",
        )
    seconds = time.perf_counter() - started
    total = teams["rows"] + members["rows"]
    return {
        "teams": teams,
        "members": members,
        "rows": total,
        "seconds": round(seconds, 1),
        "rows_per_s": round(total / max(seconds, 1e-9), 1),
    }

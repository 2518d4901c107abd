"""Shared by the scoring benchmarks: real Postgres + Kafka (local processes) and a synthetic
national-shaped hierarchy (34 provinces, ~22 teams per commune, one team per village)."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

# `python -m tests.load.bench_scoring_*` from the repository root: the same import roots as pytest
ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [
    str(ROOT / p) for p in ("libs", "services", "deploy") if str(ROOT / p) not in sys.path
]

from common.contracts.activities import OUTCOMES, SKILLS  # noqa: E402
from common.contracts.teams import UnitPath  # noqa: E402
from devstack.infra import Infra  # noqa: E402
from tests.load.bench_infra import bench_infra  # noqa: E402

TEAMS_PER_COMMUNE = 22  # 74,422 teams / 3,321 communes
PROVINCES = 34


@contextmanager
def infrastructure() -> Iterator[Infra]:
    """Fresh servers in a temp dir (or DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS if set)."""
    with bench_infra("cdt-bench-scoring-") as (infra, _):
        from common.kafka import ensure_topics

        asyncio.run(ensure_topics(infra.kafka_bootstrap_servers))
        os.environ.update(
            {
                "DATABASE_URL": infra.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
                "CDT_ADMIN_TOKEN": "bench-token",
                "CDT_ENV": "test",
                "CDT_TRACES_EXPORTER": "none",
                "CDT_TRACE_SQL": "false",
                "CDT_LOG_LEVEL": "WARNING",
            }
        )
        yield infra


@dataclass(frozen=True)
class Team:
    id: uuid.UUID
    path: UnitPath
    members: tuple[uuid.UUID, ...]


def hierarchy(teams: int, rng: random.Random) -> list[Team]:
    out = []
    for index in range(teams):
        commune_index = index // TEAMS_PER_COMMUNE
        province = f"{commune_index % PROVINCES + 1:02d}"
        commune = f"{province}-{commune_index:05d}"
        out.append(
            Team(
                id=uuid.UUID(int=rng.getrandbits(128)),
                path=UnitPath(province=province, commune=commune, village=f"{commune}-V{index}"),
                members=tuple(uuid.UUID(int=rng.getrandbits(128)) for _ in range(5)),
            )
        )
    return out


def activity_fields(team: Team, rng: random.Random, *, year: int = 2026) -> dict[str, object]:
    """One plausible activity: a week's door-to-door visit, a session or a support desk."""
    occurred = datetime(year, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(330 * 86400))
    return {
        "id": uuid.UUID(int=rng.getrandbits(128)),
        "team_id": team.id,
        "member_id": rng.choice(team.members),
        "occurred_at": occurred,
        "recorded_at": occurred,
        "kind": rng.choice(["household_visit", "household_visit", "group_session", "support_desk"]),
        "skills": rng.sample(SKILLS, rng.randint(1, 2)),
        "citizens_reached": rng.randint(1, 6),
        "household_hash": f"{team.id.hex[:8]}-{rng.randrange(400)}",
        "outcomes": {name: rng.randint(0, 1) for name in rng.sample(OUTCOMES, 2)},
        "unit_path": team.path,
    }

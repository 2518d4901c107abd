"""The score changelog: `score_history` read in publication order by the relay that sends each
version to the score topics, and the position it has published up to.

Every writer of scores takes `CHANGELOG_LOCK_KEY` (a transaction lock) before its first score,
so transactions that write scores commit one after the other and draw their `seq` in that
order: once a row is visible, every row of a lower `seq` is visible too or was rolled back.
The relay can then keep a single position instead of marking each row published (the outbox's
`published_at` update and its read cost the publisher a third of its PostgreSQL time).
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from scoring.domain import SubjectPeriod

CHANGELOG_LOCK_KEY = 582_731_005  # writers of scores, one transaction at a time
RELAY_LOCK_KEY = 582_731_006  # one changelog relay at a time


class ChangelogRow(NamedTuple):
    """One published score version, as the relay sends it (the JSON documents as stored)."""

    seq: int
    subject_type: str
    subject_id: str
    period: str
    criteria_set: str
    version: int
    score: float
    max_score: float
    rank: int | None
    rank_of: int | None
    components: str
    indicators: str
    as_of_event_time: datetime | None
    computed_at: datetime
    traceparent: str | None


async def lock_for_scores(session: AsyncSession) -> None:
    """Before the transaction's first score: see the module's docstring."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CHANGELOG_LOCK_KEY})


# `ChangelogRow`'s columns, the JSON documents as the text stored
_ROW = (
    "h.seq, h.subject_type, h.subject_id, h.period, h.criteria_set, h.version, h.score,"
    " h.max_score, h.rank, h.rank_of, h.components::text, h.indicators::text,"
    " h.as_of_event_time, h.computed_at, h.traceparent"
)
_UNPUBLISHED = text(
    f"SELECT {_ROW} FROM scoring.score_history h"  # noqa: S608 - constant fragments
    " WHERE h.seq > (SELECT published_seq FROM scoring.score_changelog)"
    " ORDER BY h.seq LIMIT :limit"
)
_SENT_OF_KEY = text(
    f"SELECT {_ROW} FROM scoring.score_history h"  # noqa: S608 - constant fragments
    " WHERE h.subject_type = :st AND h.subject_id = :sid AND h.period = :p"
    " AND h.seq <= (SELECT published_seq FROM scoring.score_changelog)"
    " ORDER BY h.seq"
)


async def take_unpublished(session: AsyncSession, *, limit: int) -> list[ChangelogRow] | None:
    """The oldest versions not published yet, in order; None while another relay holds the
    changelog (its lock lasts until this transaction ends)."""
    held = await session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": RELAY_LOCK_KEY})
    if not held:
        return None
    return [ChangelogRow(*row) for row in await session.execute(_UNPUBLISHED, {"limit": limit})]


async def sent_versions(session: AsyncSession, key: SubjectPeriod) -> list[ChangelogRow]:
    """The versions of a subject-period the relay has sent, in the order it sent them."""
    rows = await session.execute(
        _SENT_OF_KEY, {"st": key.subject_type, "sid": key.subject_id, "p": key.period}
    )
    return [ChangelogRow(*row) for row in rows]


async def mark_published(session: AsyncSession, *, up_to: int) -> None:
    await session.execute(
        text("UPDATE scoring.score_changelog SET published_seq = :seq"), {"seq": up_to}
    )


async def unpublished_count(session: AsyncSession) -> int:
    """Versions written and not published yet (an index range)."""
    count = await session.scalar(
        text(
            "SELECT count(*) FROM scoring.score_history"
            " WHERE seq > (SELECT published_seq FROM scoring.score_changelog)"
        )
    )
    return int(count or 0)


async def scores_left_in_outbox(session: AsyncSession, *, topic: str) -> bool:
    """Whether score events written to the outbox before the changelog existed still wait
    there (the changelog waits for them: a key's versions go out in order)."""
    left = await session.scalar(
        text(
            "SELECT EXISTS (SELECT 1 FROM scoring.outbox"
            " WHERE published_at IS NULL AND topic = :topic)"
        ),
        {"topic": topic},
    )
    return bool(left)

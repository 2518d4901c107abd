"""The one invariant every fault test ends with.

*Every subject's indicators in scoring equal a from-scratch recompute over the distinct
accepted, non-voided events, and every accepted event is in scoring exactly once.*

Checked three ways, after the pipeline has drained (outboxes empty, every group's lag 0):

Households count as scoring defines them: distinct per lowest unit (a household lives in one
village), summed upwards.

1. **Nothing lost, nothing invented**: the activities accepted by the activities service (its
   `activities` + `activity_ids` tables, the source of truth) are exactly the activities scoring
   holds as recorded facts, with the same voided flag; every activity event the activities outbox
   published is in scoring's `processed_events`; every id a client got an answer for is stored.
2. **Counted exactly once**: indicators computed here, from scratch, over the distinct live
   accepted activities (count, per kind, citizens reached, outcome sums, distinct households,
   members and teams) equal what scoring's public API serves, for every team, commune, the
   province and the nation, in every month, quarter and year touched.
3. **Incremental == recompute**: every indicator the API serves for those subject-periods is the
   same before and after `POST /v1/recompute` (scoring's own rebuild from its stored facts).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from common.kafka import kafka_client_options
from common.topics import ACTIVITY_RECORDED
from tests.faults.stack import Load, Stack
from tests.helpers import recompute_job

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
NATIONAL = ("national", "VN")
Key = tuple[str, str, str]  # subject_type, subject_id, period


@dataclass(frozen=True)
class Summary:
    accepted: int
    live: int
    subject_periods: int

    def __str__(self) -> str:
        return f"{self.accepted} accepted, {self.live} live, {self.subject_periods} subject-periods"


def periods(moment: datetime) -> tuple[str, str, str]:
    local = moment.astimezone(LOCAL)
    return (
        f"{local.year}-{local.month:02d}",
        f"{local.year}-Q{(local.month - 1) // 3 + 1}",
        str(local.year),
    )


async def accepted_activities(stack: Stack) -> list[Any]:
    return await stack.rows(
        """
        SELECT a.id, a.team_id, a.member_id, a.occurred_at, a.kind, a.citizens_reached,
               a.household_hash, a.outcomes, a.province, a.district, a.commune, a.village,
               i.voided_at IS NOT NULL AS voided
        FROM activities.activities a JOIN activities.activity_ids i ON i.id = a.id
        """
    )


async def scoring_facts(stack: Stack) -> dict[str, bool]:
    """Scoring's fact ledger (one row per activity id): recorded activity id -> voided.

    The only read of a scoring-internal table (beside `processed_events` of libs/common);
    change it here if the ledger moves.
    """
    rows = await stack.rows("SELECT activity_id, voided FROM scoring.activity_facts WHERE recorded")
    return {str(r["activity_id"]): bool(r["voided"]) for r in rows}


def subjects_of(row: Any) -> list[tuple[str, str]]:
    return [
        ("team", str(row["team_id"])),
        ("commune", row["commune"]),
        ("province", row["province"]),
        NATIONAL,
    ]


def expected_indicators(rows: list[Any]) -> dict[Key, dict[str, float]]:
    """From scratch: sums and distinct counts over the live activities, for each subject-period."""
    sums: dict[Key, Counter[str]] = defaultdict(Counter)
    distinct: dict[Key, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for row in rows:
        keys = [(st, sid, p) for st, sid in subjects_of(row) for p in periods(row["occurred_at"])]
        for key in keys:
            sums[key]  # every touched subject-period is checked, voided-only ones at zero
        if row["voided"]:
            continue
        for key in keys:
            counter = sums[key]
            counter["activities"] += 1
            counter[f"activities_{row['kind']}"] += 1
            counter["citizens_reached"] += row["citizens_reached"]
            for name, value in row["outcomes"].items():
                counter[name] += value
            if row["household_hash"]:
                # A household lives in one place: distinct per lowest unit, summed upwards.
                place = row["village"] or row["commune"] or row["district"] or row["province"]
                distinct[key]["households_visited"].add(f"{place}/{row['household_hash']}")
            if row["member_id"]:
                distinct[key]["active_members"].add(str(row["member_id"]))
            distinct[key]["active_teams"].add(str(row["team_id"]))
    expected: dict[Key, dict[str, float]] = {}
    for key, counter in sums.items():
        values = {name: float(v) for name, v in counter.items()}
        for name in ("households_visited", "active_members", "active_teams"):
            values[name] = float(len(distinct[key][name]))
        for name in ("activities", "citizens_reached"):
            values.setdefault(name, 0.0)
        expected[key] = values
    return expected


async def served_indicators(stack: Stack, keys: list[Key]) -> dict[Key, dict[str, float]]:
    """What scoring's public API serves (`GET /v1/indicators/...`)."""
    found: dict[Key, dict[str, float]] = {}
    async with httpx.AsyncClient(base_url=stack.url("scoring"), timeout=30) as http:
        for subject_type, subject_id, period in keys:
            reply = await http.get(
                f"/v1/indicators/{subject_type}/{subject_id}", params={"period": period}
            )
            if reply.status_code == 404:
                found[(subject_type, subject_id, period)] = {}
                continue
            assert reply.status_code == 200, reply.text
            found[(subject_type, subject_id, period)] = reply.json()["indicators"]
    return found


def _differences(
    expected: dict[Key, dict[str, float]], served: dict[Key, dict[str, float]]
) -> list[str]:
    wrong = []
    for key, values in sorted(expected.items()):
        for name, value in sorted(values.items()):
            got = served[key].get(name, 0.0)
            if got != value:
                wrong.append(f"{key} {name}: scoring {got}, expected {value}")
    return wrong


async def assert_applied_in_log_order(
    stack: Stack, *, since: dict[int, int], topic: str = ACTIVITY_RECORDED.name
) -> int:
    """Scoring first applied each partition's events (so each team's) in log order.

    `processed_events.processed_at` is the applying transaction's start: along a partition,
    from the offsets in `since` on, it must never go back in time. Returns how many were checked.
    """
    until = await stack.positions(topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap,
        enable_auto_commit=False,
        group_id=None,
        **kafka_client_options(),
    )
    await consumer.start()
    records: dict[int, list[Any]] = defaultdict(list)
    try:
        parts = [TopicPartition(topic, p) for p, end in until.items() if end > since.get(p, 0)]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, since.get(tp.partition, 0))
        while any(
            (
                records[tp.partition][-1].offset + 1
                if records[tp.partition]
                else since.get(tp.partition, 0)
            )
            < until[tp.partition]
            for tp in parts
        ):
            for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                records[tp.partition].extend(batch)
    finally:
        await consumer.stop()
    applied = {
        str(r["event_id"]): r["processed_at"]
        for r in await stack.rows(
            "SELECT event_id, processed_at FROM scoring.processed_events "
            "WHERE consumer_group = 'scoring'"
        )
    }
    checked = 0
    for partition, batch in records.items():
        seen: set[str] = set()
        last = None
        for record in batch:
            event_id = dict(record.headers).get("ce_id", b"").decode()
            if not event_id or event_id in seen:
                continue  # a redelivered copy: its first copy is the one that counted
            seen.add(event_id)
            assert event_id in applied, f"{topic}[{partition}]@{record.offset} never applied"
            at = applied[event_id]
            assert last is None or at >= last, (
                f"{topic}[{partition}]@{record.offset} applied before an earlier event of its key"
            )
            last = at
            checked += 1
    return checked


async def recompute(stack: Stack) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=120) as http:
        job = await recompute_job(http, base_url=stack.url("scoring"))
    assert job["state"] == "succeeded", job
    result: dict[str, Any] = job["result"]
    return result


async def assert_invariant(
    stack: Stack, *, load: Load | None = None, drain_timeout: float = 90
) -> Summary:
    await stack.wait_drained(timeout=drain_timeout)
    rows = await accepted_activities(stack)
    accepted = {str(r["id"]): bool(r["voided"]) for r in rows}

    # 1. nothing lost, nothing invented
    if load is not None:
        lost = load.answered - set(accepted)
        assert not lost, f"{len(lost)} answered ids are not stored in activities"
        load.accepted_once()
    facts = await scoring_facts(stack)
    missing = set(accepted) - set(facts)
    extra = set(facts) - set(accepted)
    assert not missing, f"{len(missing)} accepted activities are not in scoring"
    assert not extra, f"{len(extra)} activities in scoring were never accepted"
    flags = [i for i, voided in accepted.items() if facts[i] != voided]
    assert not flags, f"{len(flags)} activities voided on one side only"
    unprocessed = await stack.scalar(
        """
        SELECT count(*) FROM activities.outbox o
        WHERE o.topic LIKE 'activities.activity-%'
          AND NOT EXISTS (SELECT 1 FROM scoring.processed_events p
                          WHERE p.consumer_group = 'scoring' AND p.event_id = o.id)
        """
    )
    assert unprocessed == 0, f"{unprocessed} published activity events never processed by scoring"

    # 2. counted exactly once: scoring's indicators == a from-scratch count here
    expected = expected_indicators(rows)
    keys = sorted(expected)
    served = await served_indicators(stack, keys)
    wrong = _differences(expected, served)
    assert not wrong, "indicators differ from a from-scratch count:\n" + "\n".join(wrong[:30])

    # 3. the incremental indicators are what scoring's own full recompute rebuilds
    await recompute(stack)
    rebuilt = await served_indicators(stack, keys)
    drift = [
        f"{key}: served {served[key]} / recomputed {rebuilt[key]}"
        for key in keys
        if served[key] != rebuilt[key]
    ]
    assert not drift, "indicators differ from scoring's recompute:\n" + "\n".join(drift[:10])
    return Summary(
        accepted=len(accepted),
        live=sum(1 for v in accepted.values() if not v),
        subject_periods=len(keys),
    )

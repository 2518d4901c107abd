"""Metrics of the activities service (the shared HTTP/outbox/consumer ones are in common)."""

from __future__ import annotations

from prometheus_client import Counter

EVENTS = Counter(
    "cdt_activities_events_total",
    "Activity events posted by partners, by outcome (accepted|duplicate|rejected) and reason",
    ["outcome", "reason"],
)
VOIDS = Counter("cdt_activities_voided_total", "Activities voided")

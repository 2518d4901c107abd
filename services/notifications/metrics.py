"""Prometheus metrics of the notifications service (the shared ones live in common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from common.metrics import LATENCY_BUCKETS

ALERTS_RAISED = Counter("cdt_alerts_raised_total", "Alerts raised, by type", ["alert_type"])
ALERTS_RESOLVED = Counter(
    "cdt_alerts_resolved_total", "Alerts resolved automatically, by type", ["alert_type"]
)
WEBHOOK_DELIVERIES = Counter(
    "cdt_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (success, http_error, network_error, blocked) "
    "and deliveries given up (dead)",
    ["outcome"],
)
WEBHOOK_SECONDS = Histogram(
    "cdt_webhook_attempt_seconds", "Duration of one webhook attempt", buckets=LATENCY_BUCKETS
)

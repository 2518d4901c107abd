"""Prometheus metrics shared by every service (service-specific ones live in the service)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

HTTP_REQUESTS = Counter(
    "cdt_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "cdt_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=LATENCY_BUCKETS,
)
OUTBOX_BACKLOG = Gauge("cdt_outbox_backlog", "Unpublished outbox rows", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "cdt_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row", ["service"]
)
OUTBOX_PUBLISHED = Counter(
    "cdt_outbox_published_total", "Outbox rows published to Kafka", ["service", "topic"]
)
CONSUMER_LAG = Gauge(
    "cdt_consumer_lag",
    "Records behind the partition's high watermark",
    ["group", "topic", "partition"],
)
CONSUMER_EVENTS = Counter(
    "cdt_consumer_events_total", "Consumed events by outcome", ["group", "topic", "outcome"]
)
CONSUMER_BATCH_SECONDS = Histogram(
    "cdt_consumer_batch_seconds",
    "Time to process one consumed batch (DB commit included)",
    ["group"],
    buckets=LATENCY_BUCKETS,
)
DEAD_LETTERS = Counter(
    "cdt_dead_letters_total", "Records sent to a dead-letter topic", ["group", "topic"]
)

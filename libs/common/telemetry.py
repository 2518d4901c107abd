"""OpenTelemetry: one tracer provider per service, exporters chosen by configuration.

Providers are per service (not global) so that several services in one test process still
report their own `service.name`. Messaging spans follow the OpenTelemetry semantic conventions
for Kafka (`send <topic>` / `process <topic>`, `messaging.*` attributes).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind

from common.settings import ServiceSettings

MESSAGING_SYSTEM = "kafka"


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to a local JSON-lines file (`make run`'s default; `… trace show`)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(span_to_dict(s), ensure_ascii=False, default=str) for s in spans]
        data = ("\n".join(lines) + "\n").encode()
        # One unbuffered O_APPEND write per batch: the four services share the file, and a
        # buffered writer could interleave their lines mid-record.
        with self._lock, self._path.open("ab", buffering=0) as out:
            out.write(data)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    start, end = span.start_time or 0, span.end_time or 0
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name"),
        "start_ns": start,
        "duration_ms": round((end - start) / 1e6, 3),
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [
            {
                "trace_id": format(link.context.trace_id, "032x"),
                "span_id": format(link.context.span_id, "016x"),
            }
            for link in span.links
        ],
    }


def build_tracer_provider(settings: ServiceSettings) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.service_name, "deployment.environment": settings.cdt_env}
        ),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    exporter: SpanExporter | None
    if settings.otel_traces_exporter == "file":
        exporter = JsonLinesSpanExporter(settings.trace_file)
    elif settings.otel_traces_exporter == "console":
        exporter = ConsoleSpanExporter()
    elif settings.otel_traces_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        )
    else:
        exporter = None
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    return provider


def context_from_headers(headers: Mapping[str, str]) -> Context:
    return extract(dict(headers))


def current_trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, as W3C spells them; None outside a trace."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


def span_link(headers: Mapping[str, str]) -> Link | None:
    span_context = trace.get_current_span(context_from_headers(headers)).get_span_context()
    return Link(span_context) if span_context.is_valid else None


def producer_span_attributes(
    *, topic: str, message_id: str | None = None, key: str | None = None, count: int = 1
) -> dict[str, Any]:
    """A send of one message (its id and key) or of a batch (`count`, no per-message ids)."""
    attributes: dict[str, Any] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": topic,
    }
    if count > 1:
        attributes["messaging.batch.message_count"] = count
    else:
        attributes["messaging.message.id"] = message_id
        attributes["messaging.kafka.message.key"] = key
    return attributes


def consumer_span_attributes(*, topic: str, group: str, count: int) -> dict[str, Any]:
    return {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group,
        "messaging.batch.message_count": count,
    }


__all__ = [
    "JsonLinesSpanExporter",
    "SpanKind",
    "build_tracer_provider",
    "consumer_span_attributes",
    "context_from_headers",
    "producer_span_attributes",
    "span_link",
]

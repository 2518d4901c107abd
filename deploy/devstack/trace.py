"""Print a trace from the local JSON-lines span file as an indented tree.

    python -m devstack.trace last            # the most recent trace
    python -m devstack.trace show <trace_id>
    python -m devstack.trace list            # recent traces, one line each

Spans of other traces that *link* to a span of this one (a consumer batch that carried this
event among others) are shown under it, marked `↪ link`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

Span = dict[str, Any]
KEY_ATTRIBUTES = (
    "http.request.method",
    "http.method",
    "http.route",
    "http.response.status_code",
    "http.status_code",
    "messaging.destination.name",
    "messaging.operation.type",
    "messaging.consumer.group.name",
    "messaging.batch.message_count",
    "messaging.message.id",
    "db.operation.name",
    "db.operation",
    "url.full",
)


def load_spans(path: Path) -> list[Span]:
    if not path.exists():
        raise SystemExit(f"no span file at {path} (is CDT_TRACES_EXPORTER=file?)")
    spans = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                try:
                    spans.append(json.loads(line))
                except ValueError:
                    continue  # a line cut short by a crash
    return spans


def trace_ids_by_recency(spans: Iterable[Span]) -> list[str]:
    latest: dict[str, int] = {}
    for span in spans:
        if span["parent_id"] is None:
            latest[span["trace_id"]] = max(latest.get(span["trace_id"], 0), span["start_ns"])
    return sorted(latest, key=latest.__getitem__, reverse=True)


def render(spans: list[Span], trace_id: str) -> Iterator[str]:
    own = [s for s in spans if s["trace_id"] == trace_id]
    if not own:
        raise SystemExit(f"trace {trace_id} not found")
    ids = {s["span_id"] for s in own}
    children: dict[str | None, list[tuple[Span, bool]]] = defaultdict(list)
    for span in own:
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children[parent].append((span, False))
    for span in spans:
        if span["trace_id"] == trace_id:
            continue
        for link in span.get("links", []):
            if link["trace_id"] == trace_id and link["span_id"] in ids:
                children[link["span_id"]].append((span, True))
                break
    start = min(s["start_ns"] for s in own)
    services = sorted({s["service"] for s in own})
    yield f"trace {trace_id}  ({len(own)} spans, services: {', '.join(services)})"
    yield from _walk(children, None, depth=0, start=start)


def _walk(
    children: dict[str | None, list[tuple[Span, bool]]],
    parent: str | None,
    *,
    depth: int,
    start: int,
) -> Iterator[str]:
    for span, linked in sorted(children.get(parent, []), key=lambda item: item[0]["start_ns"]):
        offset = (span["start_ns"] - start) / 1e6
        attrs = " ".join(
            f"{k}={span['attributes'][k]}" for k in KEY_ATTRIBUTES if k in span["attributes"]
        )
        mark = "↪ link " if linked else ""
        yield (
            f"{'  ' * depth}{mark}[{span['service']}] {span['name']} {span['kind'].lower()} "
            f"+{offset:.1f}ms {span['duration_ms']:.1f}ms"
            + (" ERROR" if span.get("status") == "ERROR" else "")
            + (f"  {attrs}" if attrs else "")
        )
        if not linked:
            yield from _walk(children, span["span_id"], depth=depth + 1, start=start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.trace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--file", type=Path, default=Path(os.environ.get("CDT_TRACE_FILE", ".data/traces.jsonl"))
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("last", help="the most recent trace")
    show = commands.add_parser("show", help="one trace by id")
    show.add_argument("trace_id")
    listing = commands.add_parser("list", help="recent traces")
    listing.add_argument("-n", type=int, default=20)
    args = parser.parse_args(argv)

    spans = load_spans(args.file)
    if args.command == "list":
        roots = {s["trace_id"]: s for s in spans if s["parent_id"] is None}
        for trace_id in trace_ids_by_recency(spans)[: args.n]:
            root = roots[trace_id]
            print(f"{trace_id}  [{root['service']}] {root['name']}  {root['duration_ms']:.1f}ms")
        return 0
    if args.command == "last":
        recent = trace_ids_by_recency(spans)
        if not recent:
            raise SystemExit("no traces yet")
        trace_id = recent[0]
    else:
        trace_id = args.trace_id
    for line in render(spans, trace_id):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

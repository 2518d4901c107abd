"""Structured JSON logs carrying the current trace and span ids."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from common.telemetry import current_trace_ids

# Defence in depth: whatever a careless log call passes, phone numbers (9-11 digits, with or
# without +84), bearer tokens, bare JWTs and invitation codes never reach the output.
_PHONE = re.compile(r"(?<![\w-])(?:\+?84|0)\d{8,10}(?![\w-])")
_BEARER = re.compile(r"(?i)bearer\s+[\w.~+/=-]+")
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")  # a JWS: its header always starts {"
_INVITATION = re.compile(r"cdti_[\w-]+")


def redact(text: str) -> str:
    text = _BEARER.sub("Bearer [redacted]", _PHONE.sub("[phone]", text))
    return _INVITATION.sub("[invitation]", _JWT.sub("[token]", text))


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        if ids := current_trace_ids():
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(*, service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Access logs would print query strings; our own middleware records routes instead.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("aiokafka").setLevel(logging.WARNING)

from __future__ import annotations

import json
import logging

from common.logs import JsonFormatter, redact


def test_phone_numbers_and_tokens_never_reach_the_log() -> None:
    assert redact("call 0912345678 or +84912345678") == "call [phone] or [phone]"
    assert redact("Authorization: Bearer abc.DEF-123") == "Authorization: Bearer [redacted]"
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"
    assert redact(f"token={jwt}, ok") == "token=[token], ok"
    assert redact("code cdti_AbC-d_9 used") == "code [invitation] used"
    assert (
        redact("team DT-0001 code 82-28000 uuid 0191f1a2")
        == "team DT-0001 code 82-28000 uuid 0191f1a2"
    )


def test_json_lines_with_level_service_and_redacted_message() -> None:
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "member %s", ("0987654321",), None
    )
    entry = json.loads(JsonFormatter("teams").format(record))
    assert entry["service"] == "teams" and entry["level"] == "WARNING"
    assert entry["msg"] == "member [phone]"

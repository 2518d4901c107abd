"""Named crash points for fault-injection tests.

`CDT_FAULT_POINTS=consumer.after_db_commit,relay.after_send` makes the process die with
`os._exit` (no cleanup, like `kill -9`) the first time it reaches a listed point. Unset in
production, it costs one set lookup.
"""

from __future__ import annotations

import os
import sys

_ARMED = {p.strip() for p in os.environ.get("CDT_FAULT_POINTS", "").split(",") if p.strip()}


def crash_point(name: str) -> None:
    if name in _ARMED:
        sys.stderr.write(f"fault injection: crashing at {name}\n")
        sys.stderr.flush()
        os._exit(137)

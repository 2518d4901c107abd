"""`python -m tests.load.loadtest --help`: the one-command load test (see run.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# Runnable from the repository root without PYTHONPATH set.
for _part in ("libs", "services", "deploy", "."):
    if str(ROOT / _part) not in sys.path:
        sys.path.insert(0, str(ROOT / _part))

from tests.load.loadtest.run import main  # noqa: E402

sys.exit(main())

"""Locust scenario for integrators who already use Locust: partner apps posting activity batches.

Prepare once with the one-command tool (it loads the national fixture, creates one partner key per
province and writes the roster and keys under `.data/loadtest/`):

    make loadtest            # or: python -m tests.load.loadtest --scale smoke --rate 50
    locust -f tests/load/locustfile.py --host http://127.0.0.1:8002 \\
        --users 20 --spawn-rate 5 --run-time 5m --headless

Environment: `LOADTEST_ROSTER` (default `.data/loadtest/roster-national-seed42.json`),
`LOADTEST_PARTNERS` (default `.data/loadtest/partners.json`), `LOADTEST_BATCH` (events per
request, default 100), `LOADTEST_RPS_PER_USER` (requests/s per user, default 1),
`LOADTEST_DUPLICATES` / `LOADTEST_INVALID` (shares, default 0.05 / 0.02), `LOADTEST_SEED`.

Locust is a closed model (a user waits for its answer before the next request), so a slow server
lowers the offered rate; `python -m tests.load.loadtest` keeps a constant arrival rate instead and
also measures end-to-end latency to `scoring.score-latest.v1` and reconciles the counts.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _part in ("libs", "services", "deploy", "."):
    if str(ROOT / _part) not in sys.path:
        sys.path.insert(0, str(ROOT / _part))

from locust import HttpUser, constant_throughput, events, task  # noqa: E402

from tests.load.loadtest.generator import ActivityFactory, Mix, TeamRef  # noqa: E402

ROSTER = Path(
    os.environ.get("LOADTEST_ROSTER", ROOT / ".data/loadtest/roster-national-seed42.json")
)
PARTNERS = Path(os.environ.get("LOADTEST_PARTNERS", ROOT / ".data/loadtest/partners.json"))
BATCH = int(os.environ.get("LOADTEST_BATCH", "100"))
RPS_PER_USER = float(os.environ.get("LOADTEST_RPS_PER_USER", "1"))
SEED = int(os.environ.get("LOADTEST_SEED", "42"))

_state: dict[str, Any] = {}


@events.init.add_listener
def _load(environment: Any, **_: Any) -> None:
    if not ROSTER.exists() or not PARTNERS.exists():
        raise SystemExit(f"run `make loadtest` first: {ROSTER} or {PARTNERS} is missing")
    roster = json.loads(ROSTER.read_text())
    teams: dict[str, list[TeamRef]] = {}
    for team_id, (province, members) in roster.items():
        teams.setdefault(province, []).append(TeamRef(team_id, tuple(members), province))
    host = (environment.host or "http://127.0.0.1:8002").rstrip("/")
    saved = json.loads(PARTNERS.read_text())
    keys = saved.get(host) or next(iter(saved.values()), {})
    teams = {p: refs for p, refs in teams.items() if p in keys}
    if not teams:
        raise SystemExit(f"no partner keys for {host} in {PARTNERS}")
    _state["keys"] = keys
    _state["factory"] = ActivityFactory(
        teams_by_province=teams,
        mix=Mix(
            duplicate_share=float(os.environ.get("LOADTEST_DUPLICATES", "0.05")),
            invalid_share=float(os.environ.get("LOADTEST_INVALID", "0.02")),
            campaign_share=0.0,
        ),
        seed=SEED,
        campaign_id=None,
    )


class PartnerApp(HttpUser):
    """One partner app of one province, sending batches at a steady pace."""

    wait_time = constant_throughput(RPS_PER_USER)

    @task
    def post_batch(self) -> None:
        factory: ActivityFactory = _state["factory"]
        province = factory.province()
        items = [factory.item(province) for _ in range(BATCH)]
        with self.client.post(
            "/v1/activities:batch",
            json={"items": [event for event, _ in items]},
            headers={"Authorization": f"Bearer {_state['keys'][province]}"},
            name="POST /v1/activities:batch",
            catch_response=True,
        ) as reply:
            if reply.status_code != 200:
                reply.failure(f"HTTP {reply.status_code}")
                return
            results = reply.json().get("items", [])
            wrong = 0
            for (event, expected), result in zip(items, results, strict=False):
                if result.get("status") == "accepted":
                    factory.remember(province, event)
                if result.get("status") != expected:
                    wrong += 1
            if wrong:
                reply.failure(f"{wrong} of {len(items)} items not answered as expected")
            else:
                reply.success()

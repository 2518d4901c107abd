"""The load test tool itself, at smoke scale, against real processes, as on a fresh machine.

`python -m tests.load.loadtest --scale smoke` with no running stack and no `DATABASE_URL` /
`KAFKA_BOOTSTRAP_SERVERS`: it starts its own PostgreSQL, Kafka and the four services on free
ports (what `make loadtest` does on a fresh machine; nothing the rest of the suite left behind
in the shared infrastructure can interfere), loads the two smallest provinces through the bulk
APIs, calibrates, ramps, runs two measured phases (~30 s of load in all) and must produce a report
whose counts reconcile exactly, with end-to-end latencies measured and a valid PNG chart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_smoke_load_test_reconciles_and_reports(workdir: Path) -> None:
    data_dir, reports = workdir / "loadtest-data", workdir / "loadtest-reports"
    own_stack = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "CDT_ADMIN_TOKEN")
    env = {k: v for k, v in os.environ.items() if k not in own_stack}
    env.update(
        PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("libs", "services", "deploy", ".")),
        PYTHONUNBUFFERED="1",
        CDT_ENV="test",
    )
    log_path = workdir / "loadtest.log"
    command = [
        sys.executable,
        "-m",
        "tests.load.loadtest",
        "--scale",
        "smoke",
        "--ports",
        "auto",
        "--data-dir",
        str(data_dir),
        "--reports-dir",
        str(reports),
        "--ramp-start",
        "20",
        "--ramp-factor",
        "2",
        "--ramp-max",
        "40",
        "--ramp-step",
        "6",
        "--rates",
        "50%,80%",
        "--duration",
        "10",
        "--batch-size",
        "10",
        "--calibration-records",
        "20000",
        "--profile-seconds",
        "4",
        "--drain-timeout",
        "180",
    ]
    # Streamed to a file, not captured: on a timeout the tail shows which step it was stuck in.
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            returncode = proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # lets it stop the services it started
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            pytest.fail("load test still running after 900 s:\n" + log_path.read_text()[-6000:])
    output = log_path.read_text()
    assert returncode == 0, output[-6000:]
    assert "sustained end to end" in output and "exact" in output

    [json_path] = reports.glob("loadtest-*.json")
    [png_path] = reports.glob("loadtest-*.png")
    report = json.loads(json_path.read_text())
    assert report["reconciled"] is True
    assert report["fixture"]["teams"] > 100 and report["fixture"]["provinces"] == 2
    assert report["calibration"]["kafka_records_per_s"] > 0
    assert report["calibration"]["postgres_copy_rows_per_s"] > 0
    assert report["ramp"]["sustained_events_per_s"] > 0
    assert [p["name"] for p in report["phases"]] == ["50% of sustained", "80% of sustained"]
    for phase in report["phases"]:
        rec = phase["reconciliation"]
        assert rec["exact"], rec
        assert rec["accepted_answers"] > 0
        assert (
            rec["accepted_answers"]
            == rec["stored_in_activities"]
            == rec["facts_in_scoring"]
            == rec["e2e_matched"]
        ), rec
        assert rec["stored_but_not_accepted"] == 0 and rec["e2e_unmatched"] == 0
        assert phase["end_to_end_ms"]["count"] == rec["accepted_answers"]
        assert phase["end_to_end_ms"]["p50"] > 0
        assert phase["acceptance_ms"]["count"] > 0
        assert phase["processes"]["scoring"]["rss_mb_peak"] > 0
        assert phase["scored_events_per_s"] > 0 and phase["alerts_per_s"] is not None
        assert phase["kafka_records_per_accepted_event"] > 0
        assert {"accepted_over_kafka", "accepted_over_copy"} <= set(phase["calibration_ratios"])
    assert report["bottleneck"]["verdict"]

    png = png_path.read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 20_000
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(png_path).shape
    assert width > 800 and height > 800

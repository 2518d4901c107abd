"""The load test tool itself, at smoke scale, against real processes.

`python -m tests.load.loadtest --scale smoke` on the suite's PostgreSQL and Kafka: it starts the
four services on free ports, loads the two smallest provinces through the bulk APIs, calibrates,
ramps, runs two measured phases (~30 s of load in all) and must produce a report whose counts
reconcile exactly, with end-to-end latencies measured and a valid PNG chart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_smoke_load_test_reconciles_and_reports(workdir: Path, subprocess_env) -> None:  # type: ignore[no-untyped-def]
    data_dir, reports = workdir / "loadtest-data", workdir / "loadtest-reports"
    env = {k: v for k, v in subprocess_env.items() if k != "CDT_ADMIN_TOKEN"}
    done = subprocess.run(
        [
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
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
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
    assert report["bottleneck"]["verdict"]

    png = png_path.read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 20_000
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(png_path).shape
    assert width > 800 and height > 800

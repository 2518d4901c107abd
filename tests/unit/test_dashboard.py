"""The Grafana dashboard only charts metrics the code really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import activities.metrics
import common.metrics
import notifications.metrics  # noqa: F401 - registers the services' metrics

ROOT = Path(__file__).resolve().parents[2]


def exported_samples() -> set[str]:
    return set(REGISTRY._names_to_collectors)  # every sample name registered


def test_every_dashboard_query_uses_exported_metrics() -> None:
    assert activities.metrics and common.metrics
    dashboard = json.loads((ROOT / "deploy/grafana/cdt-pipeline.json").read_text())
    exported = exported_samples()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for metric in re.findall(r"\b(cdt_[a-z_]+)", target["expr"]):
                assert metric in exported, f"{panel['title']}: {metric} is not exported"

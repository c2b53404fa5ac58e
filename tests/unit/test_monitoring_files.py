"""The Prometheus rules and the Grafana dashboard in deploy/ read only metrics ordersync's stages serve,
with the labels those metrics have: a renamed metric or label breaks this test, not a team's paging."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import ordersync.pipeline.metrics
import ordersync.ratelimit.metrics

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
_METRIC = re.compile(r"\b(ordersync_[a-z_]+)(\{[^}]*\})?")
_BY = re.compile(r"\bby \(([^)]*)\)")
#: Labels Prometheus adds to every scraped series.
_TARGET_LABELS = {"instance", "job", "le"}


def _served() -> dict[str, set[str]]:
    """Every series name ordersync's stages serve, with its labels."""
    served: dict[str, set[str]] = {}
    for module in (ordersync.pipeline.metrics, ordersync.ratelimit.metrics):
        for metric in vars(module).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            (family,) = metric.describe()
            labels = set(metric._labelnames) | _TARGET_LABELS
            for suffix in _SUFFIXES[family.type]:
                served[family.name + suffix] = labels
    return served


def _check(expr: str, served: dict[str, set[str]]) -> list[str]:
    problems = []
    names = _METRIC.findall(expr)
    if not names:
        problems.append(f"{expr!r} reads no ordersync metric")
    for name, selector in names:
        if name not in served:
            problems.append(f"{name} is not served")
            continue
        for label in re.findall(r"(\w+)\s*=~?", selector or ""):
            if label not in served[name]:
                problems.append(f"{name} has no label {label}")
        for grouping in _BY.findall(expr):
            for label in (part.strip() for part in grouping.split(",")):
                if label and label not in served[name]:
                    problems.append(f"{name} has no label {label} (by)")
    return problems


def test_the_alert_rules_read_served_metrics_and_say_how_bad() -> None:
    served = _served()
    rules = yaml.safe_load((DEPLOY / "prometheus" / "ordersync-rules.yml").read_text())
    found: list[dict[str, Any]] = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len(found) >= 8
    problems = []
    for rule in found:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        problems += [f"{rule['alert']}: {p}" for p in _check(rule["expr"], served)]
    assert problems == []


def test_the_grafana_dashboard_reads_served_metrics() -> None:
    served = _served()
    dashboard = json.loads((DEPLOY / "grafana" / "ordersync-dashboard.json").read_text())
    problems = []
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            problems += [f"{panel['title']}: {p}" for p in _check(target["expr"], served)]
    assert problems == []


def test_the_check_catches_a_metric_or_label_that_does_not_exist() -> None:
    served = _served()
    assert _check("rate(ordersync_records_processed_total[5m])", served) == []
    assert _check("rate(ordersync_records_handled_total[5m])", served) == [
        "ordersync_records_handled_total is not served"
    ]
    assert _check('ordersync_consumer_lag{shop="x"}', served) == ["ordersync_consumer_lag has no label shop"]

"""Acceptance: every metric the Grafana dashboard and the Prometheus alert rules name is
exported by the code (the node, the inference server or the ops/dashboard app), with every
label they use."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from serving.inference.metrics import ServingMetrics
from serving.ops.app import OpsMetrics
from tests.unit.promql_names import (
    HISTOGRAM_LABEL,
    PROMETHEUS_SERIES,
    TARGET_LABELS,
    all_dashboard_and_alert_exprs,
    base_metric_name,
    promql_metric_names_and_labels,
)
from trading.node.metrics import NodeMetrics


def exported(holder: Any) -> dict[str, set[str]]:
    """Series name -> label names, as a scrape shows them: every labelled metric of the
    holder's registry gets one child first (a labelled metric has no series until then)."""
    for value in vars(holder).values():
        if isinstance(value, MetricWrapperBase) and value._labelnames:
            value.labels(*("x" for _ in value._labelnames))
    series: dict[str, set[str]] = {}
    text = generate_latest(holder.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = set(sample.labels)
            series.setdefault(sample.name, set()).update(labels)
            base = base_metric_name(sample.name)
            if base != sample.name:
                series.setdefault(base, set()).update(labels)
    return series


def all_exported() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for holder in (NodeMetrics(["BTCUSDT", "ETHUSDT"]), ServingMetrics(), OpsMetrics()):
        for name, labels in exported(holder).items():
            out.setdefault(name, set()).update(labels)
    return out


def used() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for expr in all_dashboard_and_alert_exprs():
        for name, labels in promql_metric_names_and_labels(expr).items():
            out.setdefault(name, set()).update(labels)
    return out


def test_the_dashboard_and_the_alerts_name_the_handbook_metrics() -> None:
    names = set(used())
    # the operator handbook's names, and the rest of the list
    assert names >= {"pnl_realized", "pnl_unrealized", "drift_score", "guardrail_trigger_total",
                     "state_active", "inference_latency_seconds", "funding_proximity_seconds",
                     "state_transitions_total", "model_created_timestamp_seconds"}  # fmt: skip


def test_every_metric_used_is_exported_with_its_labels() -> None:
    have = all_exported()
    missing, missing_labels = [], []
    for name, labels in sorted(used().items()):
        if name in PROMETHEUS_SERIES:
            continue
        if name not in have:
            missing.append(name)
            continue
        wanted = labels - TARGET_LABELS - {HISTOGRAM_LABEL}
        if not wanted <= have[name]:
            missing_labels.append(f"{name}: {sorted(wanted - have[name])}")
    print(f"{len(used())} metrics used, {len(have)} series exported")
    assert missing == [] and missing_labels == []


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("sum(rate(guardrail_triggers_total[5m])) > 30", "guardrail_triggers_total"),
        ('state_active{regime="1"}', "regime"),
    ],
)
def test_the_check_catches_a_wrong_name_or_label(expr: str, problem: str) -> None:
    have = all_exported()
    found = promql_metric_names_and_labels(expr)
    bad = [n for n in found if n not in have] + [
        label for n, labels in found.items() if n in have for label in labels - have[n]
    ]
    assert bad == [problem]

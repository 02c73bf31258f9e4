"""`hmmtrader up | status | down` on the shared thin world (version 1 in production), and
a real Prometheus (Debian's package) scraping that stack with the project's
deploy/prometheus files: every target up, every alert expression backed by data, two
alerts firing in Prometheus's own /api/v1/alerts."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.processes import HMMTRADER, profile_env
from tests.integration.worlds import thin_home
from tests.profile import THIN
from tests.tools import missing_tool
from trading.process import LOOPBACK, ServerProcess, free_port, group_pids

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[2]
PROMETHEUS = Path("/usr/bin/prometheus")
# job -> the part of the stack it scrapes (the dashboard serves the ops API too)
JOBS = {
    "hmmtrader-node": "node",
    "hmmtrader-serve": "inference",
    "hmmtrader-ops": "dashboard",
    "hmmtrader-dashboard": "dashboard",
    "mlflow": "mlflow",
}


def _prometheus_or_skip() -> None:
    if not PROMETHEUS.exists():
        missing_tool(f"{PROMETHEUS} (the real-Prometheus test)", "apt-get install prometheus")


def _hmm(home: Path, env: dict[str, str], *args: str, timeout: float = 240) -> Any:
    return subprocess.run([HMMTRADER, "--home", str(home), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def _wait(what: str, check: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


def _prometheus_config(root: Path, ports: dict[str, int]) -> Path:
    """deploy/prometheus as shipped, with its loopback targets moved to the stack's ports
    and 1 s scrape and evaluation intervals; the alert rules unchanged except ModelDrift's
    `for: 5m`, which would make the test wait five minutes (1 s here)."""
    config = yaml.safe_load((PROJECT / "deploy/prometheus/prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"{LOOPBACK}:{ports[JOBS[job['job_name']]]}"]}]
    rules = yaml.safe_load((PROJECT / "deploy/prometheus/alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "ModelDrift":
                rule["for"] = "1s"
    (root / "alerts.yml").write_text(yaml.safe_dump(rules))
    path = root / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _left_side(expr: str) -> str:
    """The alert expression without its final comparison (`x > 0.5` -> `x`): the series it
    compares, which must exist whether or not the alert fires."""
    return re.split(r"\s(?:>|<|==|!=|>=|<=)\s(?![^()]*\))", expr.strip())[0]


def test_up_status_down_and_a_real_prometheus(tmp_path: Path) -> None:
    _prometheus_or_skip()
    home = thin_home(tmp_path / "home")
    env = profile_env({
        **THIN,
        # a guardrail storm-lite: every entry is blocked (MIN_CONF), so the counter exists
        "HMMTRADER_STRATEGY__GUARDRAILS__MIN_CONF": "1.0",
        "HMMTRADER_SERVING__POLL_INTERVAL_S": "1",  # the out-of-band move is seen at once
        # the configured ports: free ones (the defaults may be another test's)
        "HMMTRADER_SERVING__PORT": str(free_port()),
        "HMMTRADER_DASHBOARD__PORT": str(free_port()),
        "HMMTRADER_NODE__METRICS_PORT": str(free_port()),
    })  # fmt: skip
    # a market minute a second; Prefect and MLflow off their defaults (the UI must follow)
    done = _hmm(home, env, "up", "--speed", "60", "--prefect-port", str(free_port()),
                "--mlflow-port", str(free_port()), "--json")  # fmt: skip
    parts = {p["name"]: p for p in json.loads(done.stdout or "[]")}
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert set(parts) == {"prefect", "worker", "mlflow", "inference", "dashboard", "node"}
        assert all(p["state"] == "up" for p in parts.values()), parts
        _check_urls(parts)
        _check_prometheus(tmp_path, parts)

        # one part crashes: status shows it down, the others stay up
        os.killpg(parts["inference"]["pid"], signal.SIGKILL)
        _wait("the inference server gone", lambda: not group_pids(parts["inference"]["pid"]), 20)
        status = _hmm(home, env, "status", "--json")
        assert status.returncode == 1  # a part is not up
        states = {p["name"]: p["state"] for p in json.loads(status.stdout)}
        assert states.pop("inference") == "down"
        assert set(states.values()) == {"up"}, states
        again = _hmm(home, env, "up")
        assert again.returncode == 1 and "already up" in again.stderr
    finally:
        down = _hmm(home, env, "down", "--timeout", "20")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped 5 part(s)" in down.stdout  # the killed one was already gone
    for part in parts.values():  # no process of any part's group is left
        assert not group_pids(part["pid"]), part["name"]
        with pytest.raises(httpx.HTTPError):
            httpx.get(part["url"], timeout=2)
    assert _hmm(home, env, "status").returncode == 3  # nothing recorded any more


def _check_urls(parts: dict[str, Any]) -> None:
    # the Prefect UI takes its API from /ui-settings: it must be this server's, reachable
    prefect = parts["prefect"]["url"].rstrip("/")
    api = httpx.get(f"{prefect}/ui-settings").json()["api_url"]
    assert api == parts["prefect"]["links"]["api"]
    assert httpx.get(f"{api}/health").status_code == 200
    assert httpx.get(prefect + "/").status_code == 200  # the UI's page

    # the worker polls the work pool the deployments use
    def online() -> list[Any]:
        r = httpx.post(f"{api}/work_pools/hmmtrader/workers/filter", json={})
        return [w for w in r.json() if w["status"] == "ONLINE"] if r.status_code == 200 else []

    _wait("a worker ONLINE on the hmmtrader pool", online, 30)
    # the MLflow UI shows the registry: version 1 in production
    mlflow = parts["mlflow"]["url"].split("/#")[0]
    got = httpx.get(f"{mlflow}/api/2.0/mlflow/registered-models/get",
                    params={"name": "hmm-regime"}).json()  # fmt: skip
    aliases = {a["alias"]: a["version"] for a in got["registered_model"]["aliases"]}
    assert aliases["production"] == "1"
    assert httpx.get(mlflow + "/").status_code == 200
    # the inference server is ready with version 1
    ready = httpx.get(parts["inference"]["url"]).json()
    assert (ready["ready"], ready["version"]) == (True, 1)
    # the dashboard's page, and the ops /status: the node runs, replaying
    page = httpx.get(parts["dashboard"]["url"])
    assert page.status_code == 200 and "<html" in page.text.lower()
    ops = parts["dashboard"]["links"]["ops status"]
    _wait("the node's heartbeat in the ops status",
          lambda: httpx.get(ops).json()["node"]["running"])  # fmt: skip
    assert httpx.get(ops).json()["mode"] == "replay"


def _check_prometheus(tmp_path: Path, parts: dict[str, Any]) -> None:
    ports = {name: int(p["url"].split(":")[2].split("/")[0]) for name, p in parts.items()}
    root = tmp_path / "prometheus"
    root.mkdir()
    config = _prometheus_config(root, ports)
    check = subprocess.run([shutil.which("promtool") or "promtool", "check", "config",
                            str(config)], capture_output=True, text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    server = ServerProcess(
        "prometheus",
        [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address={LOOPBACK}:{port}", "--web.enable-lifecycle"],
        root / "prometheus.log", url=f"http://{LOOPBACK}:{port}", health_path="/-/ready",
        timeout_s=60,
    )  # fmt: skip
    with server:
        api = f"{server.url}/api/v1"

        def query(expr: str) -> list[Any]:
            r = httpx.get(f"{api}/query", params={"query": expr}).json()
            assert r["status"] == "success", r
            return list(r["data"]["result"])

        # every target of the shipped config is up
        def targets_up() -> dict[str, str] | None:
            active = httpx.get(f"{api}/targets").json()["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in active}
            return health if set(health) == set(JOBS) and set(health.values()) == {"up"} else None

        _wait("every target up", targets_up, 30)
        # the inference server answers one window of features far from the training data
        _infer_far(parts["inference"]["url"].rsplit("/", 1)[0])

        # drift above the threshold: ModelDrift fires on the inference server's drift_score
        def firing(name: str) -> list[Any]:
            found = httpx.get(f"{api}/alerts").json()["data"]["alerts"]
            return [a for a in found if a["labels"]["alertname"] == name and a["state"] == "firing"]

        drift = _wait("ModelDrift firing", lambda: firing("ModelDrift"), 30)
        assert {a["labels"]["job"] for a in drift} == {"hmmtrader-serve"}
        assert float(drift[0]["value"]) > 0.5

        # production moved out of band (as the MLflow UI's alias editor does) to version 2,
        # which has no canary verdict: the unchanged rule fires at once
        _move_alias_out_of_band(parts["mlflow"]["url"].split("/#")[0])
        moved = _wait("ProductionAliasOutOfBand firing",
                      lambda: firing("ProductionAliasOutOfBand"), 30)  # fmt: skip
        assert moved[0]["labels"]["job"] == "hmmtrader-serve"

        # every alert's expression has data behind it (its left side returns series); the
        # node's decisions (and so its guardrail counter) begin after its replayed warm-up
        rules = httpx.get(f"{api}/rules").json()["data"]["groups"]
        alerts = [r for g in rules for r in g["rules"] if r["type"] == "alerting"]
        assert len(alerts) == 7
        for alert in alerts:
            _wait(f"data for {alert['name']}: {_left_side(alert['query'])}",
                  lambda a=alert: query(_left_side(a["query"])), 120)  # fmt: skip


def _infer_far(url: str) -> None:
    info = httpx.get(f"{url}/ready").json()["info"]
    features = len(info["feature_set"]["columns"])
    row = [8.0] * features + [1.0] * (len(info["columns"]) - features)  # z = 8 everywhere
    t0 = 1_704_067_200 * 10**9
    body = {"symbol": "BTCUSDT", "feature_version": info["feature_version"], "mode": "window",
            "rows": [row] * 300, "ts_ns": [t0 + i * 10**9 for i in range(300)]}  # fmt: skip
    r = httpx.post(f"{url}/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text


def _move_alias_out_of_band(mlflow: str) -> None:
    r = httpx.post(f"{mlflow}/api/2.0/mlflow/registered-models/alias",
                   json={"name": "hmm-regime", "alias": "production", "version": "2"})  # fmt: skip
    assert r.status_code == 200, r.text

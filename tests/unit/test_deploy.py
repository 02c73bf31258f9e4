"""The systemd units in deploy/systemd and .env.example.

`systemd-analyze verify` loads the units in a test-mode manager (no running systemd
needed): it reports unknown or unparsable directives as warnings (exit code still 0) and
an ExecStart= binary that does not exist as an error (exit code 1). The helper below
treats both as failures, and the broken-unit tests prove that it does.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel

from tests.tools import missing_tool
from trading.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
UNIT_DIR = ROOT / "deploy" / "systemd"
ENV_EXAMPLE = ROOT / ".env.example"
INSTALL_BIN = "/opt/hmmtrader/.venv/bin/"
CHECKOUT_BIN = ROOT / ".venv" / "bin"
ENV_FILE = "/etc/hmmtrader/hmmtrader.env"
STATE_DIR = "/var/lib/hmmtrader"

SERVICES = (
    "hmmtrader-node.service",
    "hmmtrader-serve.service",
    "hmmtrader-ops.service",
    "hmmtrader-dashboard.service",
    "hmmtrader-prefect-server.service",
    "hmmtrader-prefect-worker.service",
    "hmmtrader-mlflow.service",
)
TARGET = "hmmtrader.target"

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "RestrictRealtime": "yes",
    "RestrictNamespaces": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "UMask": "0027",
}
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.\-]*://[^\s/@:]+:[^\s/@]+@", re.IGNORECASE)
VAR_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


# ---- parsing -------------------------------------------------------------------------------


Unit = dict[str, list[tuple[str, str]]]


def parse_unit(text: str) -> Unit:
    """Sections -> [(key, value)] in order, duplicate keys kept, comments dropped, lines
    continued with a trailing backslash joined (as systemd does)."""
    sections: Unit = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"directive outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a KEY=value line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: Unit, section: str, key: str) -> str | None:
    found = values(unit, section, key)
    assert len(found) <= 1, f"{key}= set {len(found)} times in [{section}]"
    return found[0] if found else None


def environment(unit: Unit) -> dict[str, str]:
    """The inline Environment= assignments (quoted, several per line allowed)."""
    assigned: dict[str, str] = {}
    for line in values(unit, "Service", "Environment"):
        for word in shlex.split(line):
            name, sep, value = word.partition("=")
            assert sep, f"Environment= word without '=': {word!r}"
            assigned[name] = value
    return assigned


def load(name: str) -> Unit:
    return parse_unit((UNIT_DIR / name).read_text())


def exec_lines(unit: Unit) -> list[str]:
    return [v for k, v in unit.get("Service", []) if k.startswith("Exec")]


def looks_like_credential(value: str) -> bool:
    """A URL with a password, or a long token-like string (not a path, URL or number)."""
    if URL_WITH_PASSWORD.search(value):
        return True
    return (
        len(value) >= 20
        and re.fullmatch(r"[A-Za-z0-9+/=_\-]+", value) is not None
        and "/" not in value
        and re.search(r"[A-Za-z]", value) is not None
        and re.search(r"[0-9]", value) is not None
    )


def inlined_secrets(unit: Unit, text: str) -> list[str]:
    found = []
    for name, value in environment(unit).items():
        if SECRET_NAME.search(name):
            found.append(f"secret-like variable inlined: {name}")
        elif looks_like_credential(value):
            found.append(f"credential-like value inlined: {name}")
    for key, value in (kv for section in unit.values() for kv in section):
        if URL_WITH_PASSWORD.search(value):
            found.append(f"URL with a password in {key}=")
    return found


def env_example() -> tuple[dict[str, str], list[str]]:
    """The variables .env.example assigns, and its lines."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    assigned: dict[str, str] = {}
    for line in lines:
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            assert m.group(1) not in assigned, f"{m.group(1)} listed twice"
            assigned[m.group(1)] = m.group(2)
        else:
            assert not line.strip() or line.startswith("#"), f"not KEY=value: {line!r}"
    return assigned, lines


# ---- systemd-analyze verify ------------------------------------------------------------------


def stage(directory: Path, edits: dict[str, tuple[str, str]] | None = None) -> list[Path]:
    """Copy the units into `directory` with the install venv rewritten to this checkout's
    (so the ExecStart binaries exist); `edits` replaces text in one unit."""
    directory.mkdir(parents=True, exist_ok=True)
    staged = []
    for name in (*SERVICES, TARGET):
        text = (UNIT_DIR / name).read_text()
        if name.endswith(".service"):
            assert INSTALL_BIN in text, f"{name}: ExecStart not under {INSTALL_BIN}"
        text = text.replace(INSTALL_BIN, f"{CHECKOUT_BIN}/")
        if edits and name in edits:
            old, new = edits[name]
            assert old in text, f"{name}: {old!r} not found"
            text = text.replace(old, new)
        path = directory / name
        path.write_text(text)
        staged.append(path)
    return staged


def verify(paths: list[Path]) -> tuple[int, list[str]]:
    """Run `systemd-analyze verify`; return the exit code and the output lines that are
    about these unit files (by name or path)."""
    tool = shutil.which("systemd-analyze")
    assert tool is not None
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "info", "SYSTEMD_LOG_COLOR": "0"}
    proc = subprocess.run(
        [tool, "verify", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    markers = [str(paths[0].parent), *(p.name for p in paths)]
    lines = (proc.stdout + proc.stderr).splitlines()
    about_units = [line for line in lines if any(m in line for m in markers)]
    return proc.returncode, about_units


def verify_problems(paths: list[Path]) -> list[str]:
    code, lines = verify(paths)
    return ([f"systemd-analyze verify exited {code}"] if code else []) + lines


@pytest.fixture
def analyze() -> None:
    if shutil.which("systemd-analyze") is None:
        missing_tool("systemd-analyze", "apt-get install systemd")
    if not (CHECKOUT_BIN / "hmmtrader").exists():
        pytest.fail(f"{CHECKOUT_BIN / 'hmmtrader'} missing: run `make setup`")


@pytest.mark.usefixtures("analyze")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    paths = stage(tmp_path / "units")
    for path in paths:
        assert INSTALL_BIN not in path.read_text()
    assert verify_problems(paths) == []


@pytest.mark.usefixtures("analyze")
def test_verify_rejects_a_misspelled_directive(tmp_path: Path) -> None:
    paths = stage(
        tmp_path / "units",
        {"hmmtrader-node.service": ("\nRestart=on-failure", "\nRestartt=on-failure")},
    )
    problems = verify_problems(paths)
    assert any("Restartt" in p and "hmmtrader-node.service" in p for p in problems), problems


@pytest.mark.usefixtures("analyze")
def test_verify_rejects_a_missing_executable(tmp_path: Path) -> None:
    paths = stage(
        tmp_path / "units",
        {"hmmtrader-serve.service": (f"{CHECKOUT_BIN}/hmmtrader serve", "/nonexistent/bin/x")},
    )
    code, lines = verify(paths)
    assert code != 0
    assert any("/nonexistent/bin/x" in line for line in lines), lines


# ---- unit content ------------------------------------------------------------------------------


def test_every_unit_is_shipped_and_parses() -> None:
    shipped = sorted(p.name for p in UNIT_DIR.glob("*.service"))
    assert shipped == sorted(SERVICES)
    target = load(TARGET)
    wanted = " ".join(values(target, "Unit", "Wants")).split()
    assert sorted(wanted) == sorted(SERVICES)


@pytest.mark.parametrize("name", SERVICES)
def test_unit_runs_as_hmmtrader_with_env_file_and_restart(name: str) -> None:
    unit = load(name)
    assert one(unit, "Service", "EnvironmentFile") == ENV_FILE
    user = one(unit, "Service", "User")
    assert user and user not in ("root", "0")
    assert one(unit, "Service", "Group") == "hmmtrader" and user == "hmmtrader"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "RestartSec")
    starts = values(unit, "Service", "ExecStart")
    assert len(starts) == 1 and starts[0].startswith(INSTALL_BIN), starts
    assert "multi-user.target" in " ".join(values(unit, "Install", "WantedBy")).split()
    env = environment(unit)
    assert env.get("HMMTRADER_HOME") == STATE_DIR
    assert env.get("DO_NOT_TRACK") == "true"
    assert env.get("MLFLOW_DISABLE_TELEMETRY") == "true"
    assert env.get("PREFECT_SERVER_ANALYTICS_ENABLED") == "false"


@pytest.mark.parametrize("name", SERVICES)
def test_unit_is_hardened(name: str) -> None:
    unit = load(name)
    for key, expected in HARDENING.items():
        assert one(unit, "Service", key) == expected, f"{name}: {key}= should be {expected!r}"
    assert one(unit, "Service", "MemoryDenyWriteExecute") is None
    state_dirs = " ".join(values(unit, "Service", "StateDirectory")).split()
    writable = " ".join(values(unit, "Service", "ReadWritePaths")).split()
    assert "hmmtrader" in state_dirs or STATE_DIR in writable
    assert all(p.startswith(STATE_DIR) for p in writable), writable


def test_units_run_the_documented_commands() -> None:
    def start(name: str) -> str:
        return " ".join(values(load(name), "Service", "ExecStart")[0].split())

    assert start("hmmtrader-node.service") == f"{INSTALL_BIN}hmmtrader node"
    assert start("hmmtrader-serve.service") == f"{INSTALL_BIN}hmmtrader serve"
    assert start("hmmtrader-ops.service") == f"{INSTALL_BIN}hmmtrader ops serve"
    assert start("hmmtrader-dashboard.service") == f"{INSTALL_BIN}hmmtrader dashboard"
    assert start("hmmtrader-prefect-server.service") == (
        f"{INSTALL_BIN}prefect server start --host 127.0.0.1 --port 4200"
    )
    assert start("hmmtrader-prefect-worker.service").startswith(
        f"{INSTALL_BIN}prefect worker start --pool hmmtrader"
    )
    mlflow = start("hmmtrader-mlflow.service")
    assert mlflow.startswith(f"{INSTALL_BIN}mlflow server ")
    for part in (
        "--backend-store-uri ${MLFLOW_BACKEND_STORE_URI}",
        "--artifacts-destination ${MLFLOW_ARTIFACTS_DESTINATION}",
        "--host 127.0.0.1",
        "--port 5000",
        "--workers 1",
    ):
        assert part in mlflow
    assert environment(load("hmmtrader-mlflow.service"))["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == (
        "false"
    )
    for name in ("hmmtrader-prefect-server.service", "hmmtrader-prefect-worker.service"):
        assert environment(load(name))["PREFECT_HOME"] == f"{STATE_DIR}/prefect"
    worker = load("hmmtrader-prefect-worker.service")
    for key in ("After", "Wants"):
        assert "hmmtrader-prefect-server.service" in " ".join(values(worker, "Unit", key))


def test_servers_stop_their_whole_process_group() -> None:
    for name in SERVICES:
        if name != "hmmtrader-node.service":
            assert one(load(name), "Service", "KillMode") in (None, "control-group"), name


def test_node_unit_never_enables_trading_by_itself() -> None:
    unit = load("hmmtrader-node.service")
    directives = [f"{k}={v}" for section in unit.values() for k, v in section]
    for directive in directives:
        assert "--live" not in directive, directive
        assert "TRADING_ENABLED" not in directive, directive
        assert not re.search(r"\bops\b.*\benable\b", directive), directive
        assert "--mode" not in directive, directive  # HMMTRADER_NODE__MODE decides
    for line in exec_lines(unit):
        assert line.startswith(f"{INSTALL_BIN}hmmtrader node"), line
    assert one(unit, "Service", "KillMode") in (None, "mixed", "control-group")
    assert one(unit, "Service", "TimeoutStopSec") == "30"


@pytest.mark.parametrize("name", (*SERVICES, TARGET))
def test_no_secret_is_inlined(name: str) -> None:
    text = (UNIT_DIR / name).read_text()
    assert inlined_secrets(parse_unit(text), text) == []


@pytest.mark.parametrize(
    "line",
    [
        "Environment=BINANCE_API_KEY=abc",
        "Environment=HMMTRADER_OPS__TOKEN=x",
        'Environment="DB_PASSWORD=hunter2"',
        "Environment=MLFLOW_BACKEND_STORE_URI=postgresql+psycopg://mlflow:hunter2@db:5432/mlflow",
        "Environment=UPSTREAM=Zk3vQ9x7LmN2pR5tW8yB1cD4",
        "ExecStart=/bin/x --db postgresql://user:pass@host/db",
    ],
)
def test_the_secret_check_catches_inlined_secrets(line: str) -> None:
    text = f"[Service]\n{line}\n"
    assert inlined_secrets(parse_unit(text), text)


# ---- .env.example ------------------------------------------------------------------------------


def test_env_example_lists_every_variable_the_units_use_with_a_comment() -> None:
    assigned, lines = env_example()
    referenced = set()
    for name in SERVICES:
        for line in exec_lines(load(name)):
            referenced |= {a or b for a, b in VAR_REF.findall(line)}
    assert referenced, "the mlflow unit takes its store from the env file"
    assert referenced <= set(assigned), sorted(referenced - set(assigned))
    for i, line in enumerate(lines):
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line):
            assert i > 0 and lines[i - 1].startswith("# "), f"no comment above {line!r}"


def test_env_example_keeps_secrets_empty_and_trading_off() -> None:
    assigned, _ = env_example()
    for name in (
        "HMMTRADER_HOME",
        "HMMTRADER_NODE__MODE",
        "HMMTRADER_NODE__INFERENCE",
        "TRADING_ENABLED",
        "BINANCE_API_KEY",
        "BINANCE_API_SECRET",
        "BINANCE_TESTNET_API_KEY",
        "BINANCE_TESTNET_API_SECRET",
        "HMMTRADER_SERVING__TOKEN",
        "HMMTRADER_SERVING__URL",
        "HMMTRADER_OPS__TOKEN",
        "HMMTRADER_OPS__URL",
        "HMMTRADER_REGISTRY__TRACKING_URI",
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_ARTIFACTS_DESTINATION",
        "PREFECT_API_URL",
        "PREFECT_HOME",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        "DO_NOT_TRACK",
        "MLFLOW_DISABLE_TELEMETRY",
        "PREFECT_SERVER_ANALYTICS_ENABLED",
    ):
        assert name in assigned, name
    assert assigned["TRADING_ENABLED"] == "false"
    assert assigned["HMMTRADER_NODE__MODE"] == "paper"
    for name, value in assigned.items():
        if SECRET_NAME.search(name):
            assert value == "", f"{name} must be empty in .env.example"
        assert not looks_like_credential(value), name


def _field_exists(model: type[BaseModel], parts: list[str]) -> bool:
    field = model.model_fields.get(parts[0].lower())
    if field is None:
        return False
    if len(parts) == 1:
        return True
    annotation = field.annotation
    return (
        isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and _field_exists(annotation, parts[1:])
    )


def test_env_example_hmmtrader_variables_are_real_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assigned, _ = env_example()
    ours = {k: v for k, v in assigned.items() if k.startswith("HMMTRADER_")}
    for name in ours:
        parts = name.removeprefix("HMMTRADER_").split("__")
        assert _field_exists(Settings, parts), f"{name} is not a setting"
    # the whole file as the units' environment: the settings load with its values
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    for name, value in assigned.items():
        monkeypatch.setenv(name, value)
    settings = load_settings().settings
    assert settings.home == Path(STATE_DIR)
    assert settings.node.mode == "paper" and settings.node.inference == "in_process"
    assert settings.registry.tracking_uri == assigned["HMMTRADER_REGISTRY__TRACKING_URI"]
    assert settings.serving.url == assigned["HMMTRADER_SERVING__URL"]
    assert settings.ops.url == assigned["HMMTRADER_OPS__URL"]

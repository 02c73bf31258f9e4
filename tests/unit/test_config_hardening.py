"""Configuration refuses what would silently weaken it: infinite or absurd limits, sloppy
opt-ins, unknown HMMTRADER_* names, duplicate YAML keys; and its errors name the variable
without echoing a secret (issue 19, items 14-16)."""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from hmmtrader.cli import run
from trading.config_sources import NON_SETTINGS_VARIABLES, check_variable_names, read_variables
from trading.errors import ConfigError
from trading.frozen import Frozen
from trading.node.venues import load_secrets
from trading.settings import DEFAULT_CONFIG_DIR, PROJECT_ROOT, Settings, load_settings

SECRET = "s3cret-Value-42"
GUARDRAILS = "HMMTRADER_STRATEGY__GUARDRAILS__"


@pytest.fixture(autouse=True)
def _clean_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No .env of the checkout; no live opt-in of the developer's shell."""
    monkeypatch.chdir(tmp_path)
    for name in ("TRADING_ENABLED", "trading_enabled"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    target = tmp_path / "configs"
    shutil.copytree(DEFAULT_CONFIG_DIR, target)
    return target


def config_error(config_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load_settings(config_dir)
    return str(err.value)


# ---- 14: inf and nan are refused everywhere; absurd limits too -----------------------------
@pytest.mark.parametrize(
    "variable",
    [
        GUARDRAILS + "DAILY_LOSS_USD",
        GUARDRAILS + "STATE_DRAWDOWN_USD",
        GUARDRAILS + "MAX_TOTAL_POSITION_USD",
        GUARDRAILS + "MAX_DRIFT",
        GUARDRAILS + "MAX_DATA_AGE_MS",
        GUARDRAILS + "MAX_INFERENCE_MS",
        "HMMTRADER_STRATEGY__PER_SYMBOL__BTCUSDT__MAX_POSITION_USD",
        "HMMTRADER_DRIFT__THRESHOLD",
    ],
)
@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "nan"])
def test_infinite_or_nan_guardrail_limit_is_refused(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "PER_SYMBOL" in variable:  # a whole per-symbol block: the other keys are required
        monkeypatch.setenv("HMMTRADER_STRATEGY__PER_SYMBOL__BTCUSDT__BASE_QTY", "0.002")
    monkeypatch.setenv(variable, value)
    message = config_error()
    assert f"environment variable {variable}:" in message
    assert "finite number" in message and "inf and nan are refused" in message
    assert "settings.yaml" not in message


def test_inf_in_the_yaml_is_refused_and_names_the_file(config_dir: Path) -> None:
    path = config_dir / "settings.yaml"
    path.write_text(path.read_text().replace("daily_loss_usd: 100.0", "daily_loss_usd: .inf", 1))
    message = config_error(config_dir)
    assert f"{path}: strategy.guardrails.daily_loss_usd: Input should be a finite number" in message


def test_the_old_canary_tolerances_are_refused_and_name_their_replacement(
    config_dir: Path,
) -> None:
    path = config_dir / "settings.yaml"
    text = path.read_text().replace("  paired:", "  tolerances:\n    pnl_usd: 5.0\n  paired:", 1)
    path.write_text(text)
    message = config_error(config_dir)
    assert f"{path}: canary:" in message and "\n" not in message
    assert "canary.tolerances" in message and "remove `tolerances:`" in message
    assert "canary.paired.confidence" in message


def _float_fields(model: type[BaseModel]) -> Iterator[tuple[type[BaseModel], str]]:
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if annotation in (float, float | None):
            yield model, name
        for inner in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                yield from _float_fields(inner)


FLOAT_FIELDS = sorted(set(_float_fields(Settings)), key=lambda f: (f[0].__name__, f[1]))


def test_every_settings_model_refuses_inf_and_nan() -> None:
    """Every section is a Frozen model, and no float anywhere in the settings takes inf."""
    assert len(FLOAT_FIELDS) > 60
    for model, name in FLOAT_FIELDS:
        assert issubclass(model, Frozen), model
        for value in (math.inf, -math.inf, math.nan):
            errors = _errors(model, {name: value})
            assert any(e["loc"] == (name,) and e["type"] == "finite_number" for e in errors), (
                f"{model.__name__}.{name} accepts {value}"
            )


def _errors(model: type[BaseModel], data: dict[str, Any]) -> list[Any]:
    from pydantic import ValidationError

    try:
        model.model_validate(data)
    except ValidationError as exc:
        return list(exc.errors())
    return []


@pytest.mark.parametrize(
    ("variable", "value", "bound"),
    [
        (GUARDRAILS + "MAX_DATA_AGE_MS", "3600000", "600000"),  # an hour-old tick
        (GUARDRAILS + "MAX_INFERENCE_MS", "1e9", "60000"),
        (GUARDRAILS + "FLIP_COOLDOWN_S", "1e12", "86400"),
        (GUARDRAILS + "MAX_DRIFT", "1e6", "10"),  # a drift score never reaches it
        (GUARDRAILS + "MAX_SPREAD_BP", "50000", "10000"),  # a 500 % spread
        (GUARDRAILS + "MIN_CONF", "1.5", "1"),
        ("HMMTRADER_STRATEGY__PER_SYMBOL__BTCUSDT__COOLDOWN_S", "1e9", "86400"),
        ("HMMTRADER_STRATEGY__EXECUTION__HOLD_S", "1e9", "86400"),
        ("HMMTRADER_DRIFT__THRESHOLD", "100", "10"),
        ("HMMTRADER_POLICY__HORIZON_S", "1e9", "86400"),
        ("HMMTRADER_OPS__STALE_AFTER_S", "1e9", "86400"),
        ("HMMTRADER_SERVING__TIMEOUT_S", "1e9", "600"),
    ],
)
def test_absurd_time_or_fraction_limit_is_refused(
    variable: str, value: str, bound: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "PER_SYMBOL" in variable:
        monkeypatch.setenv("HMMTRADER_STRATEGY__PER_SYMBOL__BTCUSDT__BASE_QTY", "0.002")
        monkeypatch.setenv("HMMTRADER_STRATEGY__PER_SYMBOL__BTCUSDT__MAX_POSITION_USD", "1000")
    monkeypatch.setenv(variable, value)
    message = config_error()
    assert f"environment variable {variable}:" in message
    assert re.search(rf"less than or equal to {bound}(\.0)? ", message), message


def test_the_shipped_configs_and_the_test_profile_still_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.profile import IMPOSSIBLE, LENIENT, PROFILE, SHORT_NIGHTS, THIN

    for profile in (PROFILE, THIN, SHORT_NIGHTS, LENIENT, IMPOSSIBLE):
        for name, value in profile.items():
            monkeypatch.setenv(name, value)
    guardrails = load_settings().settings.strategy.guardrails
    assert guardrails.daily_loss_usd == 100_000 and guardrails.max_drift == 0.5


# ---- 15: variables that do not parse: one error naming the variable, no value -------------
@pytest.mark.parametrize("value", ["{bad", '{"token": ', "[1,", "not json"])
def test_unparseable_json_section_variable_is_one_config_error(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HMMTRADER_SERVING", value)
    message = config_error()
    assert message.startswith("environment variable HMMTRADER_SERVING: not valid JSON")
    assert "settings.yaml" not in message and value not in message


def test_unparseable_list_variable_names_that_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HMMTRADER_SERVING__PORT", "8011")  # a good one next to it
    monkeypatch.setenv("HMMTRADER_STRATEGY__SYMBOLS", "BTCUSDT,ETHUSDT")
    message = config_error()
    assert message.startswith("environment variable HMMTRADER_STRATEGY__SYMBOLS: not valid JSON")
    assert "HMMTRADER_SERVING__PORT" not in message.split(";")[0]


def test_unparseable_json_in_dotenv_names_the_dotenv_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"HMMTRADER_SERVING={{'token': '{SECRET}'}}\n")
    message = config_error()
    assert message.startswith(f"variable HMMTRADER_SERVING in {tmp_path / '.env'}: not valid JSON")
    assert SECRET not in message


def test_bad_json_variable_is_one_error_line_in_the_cli(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HMMTRADER_SERVING", "{bad")
    assert run(["data", "ls"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: environment variable HMMTRADER_SERVING: not valid JSON")


def test_bad_value_inside_a_json_section_names_the_variable_not_the_yaml(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HMMTRADER_SERVING", '{"token": 5}')
    message = config_error()
    assert message.startswith("environment variable HMMTRADER_SERVING: serving.token: ")
    assert "settings.yaml" not in message
    monkeypatch.setenv("HMMTRADER_SERVING", '{"port": 99999}')
    message = config_error()
    assert message.startswith("environment variable HMMTRADER_SERVING: serving.port: ")
    assert "(got 99999)" in message  # not a secret: shown


def test_bad_dotenv_value_names_the_dotenv_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HMMTRADER_SYNTHETIC__N_REGIMES=9\n")
    message = config_error()
    assert message.startswith(
        f"variable HMMTRADER_SYNTHETIC__N_REGIMES in {tmp_path / '.env'}: synthetic.n_regimes: "
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HMMTRADER_SERVING__TOKN", SECRET),  # a misspelled secret
        ("HMMTRADER_OPS__TOKEN_", SECRET),
        ("HMMTRADER_SERVING", f'{{"tokn": "{SECRET}"}}'),  # unknown key inside the JSON
        ("HMMTRADER_SERVING", '{"token": 424242424242}'),  # a secret of the wrong type
        ("HMMTRADER_REGISTRY", f'{{"tracking_uri": ["postgresql://u:{SECRET}@db"]}}'),
    ],
)
def test_secret_or_unknown_values_are_never_echoed(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)
    message = config_error()
    assert variable in message
    assert SECRET not in message and "424242424242" not in message
    assert run(["data", "ls"]) == 1
    output = capsys.readouterr()
    assert SECRET not in output.err + output.out and "424242424242" not in output.err


def test_misspelled_secret_in_dotenv_is_named_without_its_value(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"HMMTRADER_SERVING__TOKN={SECRET}\n")
    message = config_error()
    assert f"in {tmp_path / '.env'}: HMMTRADER_SERVING__TOKN" in message
    assert "did you mean HMMTRADER_SERVING__TOKEN?" in message and SECRET not in message


# ---- 16: one opt-in spelling; unknown HMMTRADER_* names; duplicate YAML keys ---------------
@pytest.mark.parametrize("value", ["1", "yes", "on", "True", "TRUE", "y", " true", "0", "no"])
def test_live_opt_in_other_spellings_are_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADING_ENABLED", value)
    with pytest.raises(ConfigError) as err:
        load_secrets()
    message = str(err.value)
    assert message.startswith("TRADING_ENABLED must be exactly true")
    assert "refused" in message


@pytest.mark.parametrize(("value", "enabled"), [("true", True), ("false", False), ("", False)])
def test_live_opt_in_is_exactly_true(
    value: str, enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADING_ENABLED", value)
    assert load_secrets().trading_enabled is enabled
    monkeypatch.delenv("TRADING_ENABLED")
    assert load_secrets().trading_enabled is False


def test_live_opt_in_from_dotenv_with_a_sloppy_value_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TRADING_ENABLED=yes\n")
    with pytest.raises(ConfigError, match="TRADING_ENABLED must be exactly true"):
        load_secrets()
    (tmp_path / ".env").write_text("TRADING_ENABLED=true\n")
    assert load_secrets().trading_enabled is True


def test_lower_case_opt_in_name_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("trading_enabled", "true")
    with pytest.raises(ConfigError, match=r"trading_enabled in the environment is not read.*"):
        load_secrets()
    monkeypatch.delenv("trading_enabled")
    (tmp_path / ".env").write_text("Trading_Enabled=true\nbinance_api_key=k\n")
    with pytest.raises(ConfigError, match="case-sensitive, write TRADING_ENABLED"):
        load_secrets()


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        ("HMMTRADER_SERVING_TOKEN", "HMMTRADER_SERVING__TOKEN"),
        ("HMMTRADER_STRATEGY_GUARDRAILS__DAILY_LOSS_USD", GUARDRAILS + "DAILY_LOSS_USD"),
        ("HMMTRADER_NODE_MODE", "HMMTRADER_NODE__MODE"),
        ("HMMTRADER_CONFIGDIR", "HMMTRADER_CONFIG_DIR"),
        ("HMMTRADER_XYZZY", None),
    ],
)
def test_unknown_hmmtrader_variable_is_refused_by_name(
    variable: str, suggestion: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, SECRET)
    message = config_error()
    assert f"unknown HMMTRADER_* variable in the environment: {variable}" in message
    if suggestion:
        assert f"(did you mean {suggestion}?)" in message
    else:
        assert "did you mean" not in message
    assert SECRET not in message


def test_unknown_hmmtrader_variable_in_dotenv_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"TRADING_ENABLED=false\nHMMTRADER_SERVING_TOKEN={SECRET}\n")
    message = config_error()
    assert f"in {tmp_path / '.env'}: HMMTRADER_SERVING_TOKEN (did you mean" in message
    assert SECRET not in message
    (tmp_path / ".env").write_text("HMMTRADER_CONFIG_DIR=/elsewhere\n")
    assert "read from the environment only" in config_error()


def _hmmtrader_names_used_in_the_repository() -> set[str]:
    """Every HMMTRADER_* name in the code, docs, units, scripts and tests (text files)."""
    names: set[str] = set()
    skip = {".venv", ".git", "var", "node_modules", "__pycache__", "fixtures"}
    text_suffixes = {".py", ".md", ".yaml", ".yml", ".toml", ".service", ".example", ".sh", ""}
    this_file = Path(__file__).resolve()
    for folder, dirs, files in os.walk(PROJECT_ROOT):
        dirs[:] = [d for d in dirs if d not in skip]
        for file in files:
            path = Path(folder, file)
            if path.suffix not in text_suffixes or path.resolve() == this_file:
                continue
            try:
                text = path.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            names |= set(re.findall(r"\bHMMTRADER_[A-Z0-9_]*[A-Z0-9]\b", text))
    return names


def test_every_hmmtrader_variable_the_repository_uses_still_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Docs, units, .env.example, scripts and tests use only settings and the few
    documented non-settings variables (HMMTRADER_HOME is a setting, `home`)."""
    # the README's and docs' example of a refused name
    names = _hmmtrader_names_used_in_the_repository() - {"HMMTRADER_SERVING_TOKEN"}
    assert {"HMMTRADER_HOME", "HMMTRADER_SERVING__TOKEN", "HMMTRADER_CONFIG_DIR"} <= names
    for name in NON_SETTINGS_VARIABLES:
        monkeypatch.setenv(name, "x" if name != "HMMTRADER_CONFIG_DIR" else str(DEFAULT_CONFIG_DIR))
    load_settings()  # the non-settings variables are accepted
    for name in sorted(names):
        monkeypatch.setenv(name, "0")
    try:
        check_variable_names(read_variables(Settings), Settings)
    except ConfigError as exc:
        pytest.fail(f"the repository uses variables the settings refuse: {exc}")


def test_duplicate_yaml_key_is_refused_with_file_key_and_line(config_dir: Path) -> None:
    path = config_dir / "settings.yaml"
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "daily_loss_usd: 100.0" in line)
    lines.insert(at + 1, "    daily_loss_usd: 1000000.0")
    path.write_text("\n".join(lines) + "\n")
    message = config_error(config_dir)
    assert message == (
        f"{path}: line {at + 2}: duplicate key strategy.guardrails.daily_loss_usd (first on "
        f"line {at + 1}); YAML would keep only the last one: remove one"
    )


def test_duplicate_top_level_and_symbol_keys_are_refused(config_dir: Path) -> None:
    settings = config_dir / "settings.yaml"
    settings.write_text(settings.read_text() + "home: /tmp/elsewhere\n")
    assert re.match(
        rf"{re.escape(str(settings))}: line \d+: duplicate key home ", config_error(config_dir)
    )
    shutil.copy(DEFAULT_CONFIG_DIR / "settings.yaml", settings)
    symbols = config_dir / "symbols.yaml"
    text = symbols.read_text()
    block = re.search(r"^  BTCUSDT:\n(?:    .*\n)+", text, re.M)
    assert block is not None
    symbols.write_text(text + block.group(0))
    assert "duplicate key symbols.BTCUSDT " in config_error(config_dir)


def test_yaml_merge_keys_are_not_duplicates(config_dir: Path) -> None:
    """`<<: *anchor` then an override is YAML's way to reuse a block, not a typo."""
    path = config_dir / "settings.yaml"
    path.write_text(
        path.read_text()
        + "ops: &ports {host: 127.0.0.1, port: 8011}\n"
        + "dashboard:\n  <<: *ports\n  port: 8051\n"
    )
    settings = load_settings(config_dir).settings
    assert settings.ops.port == 8011 and settings.dashboard.port == 8051

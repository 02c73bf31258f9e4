"""The registry under faults: a `train` killed (SIGKILL) while it registers leaves nothing
promotable and is cleaned up; promote and rollback load a version before they move an
alias; a copied state root is self-contained; the canary never tests in sample.

Each test works on a private copy of the `served` world (versions 1 and 2, production 1).
The killed registrations run in forked children of the test process, so that a SIGKILL
lands at an exact point of the real registration code without paying for a new
interpreter each time.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli_env import cli, config_for, isolated_env
from tests.integration.serving_env import broken, model_and_rows
from tests.integration.worlds import served_home
from trading.errors import InputError
from trading.regime.config import RegistrySettings
from trading.regime.pyfunc import input_example, signature_of
from trading.regime.registry import (
    RUN_PID,
    TAG_FINGERPRINT,
    TAG_REGISTRATION,
    IncompleteVersionError,
    Registry,
    RegistryError,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "hmm-regime"
TAGS = {
    "data_start": "2025-01-01",
    "data_end": "2025-01-01",
    "symbols": "BTCUSDT",
    "feature_version": "FEATURES_V1",
    "kind": "test",
}


@pytest.fixture(scope="module", autouse=True)
def _env() -> Iterator[None]:
    with isolated_env({}):
        yield


@pytest.fixture(scope="module")
def rows() -> tuple[Any, Any, Any]:
    return model_and_rows(3)


def _register(registry: Registry, model: Any, ts: Any, X: Any, fp: str) -> int:
    return registry.register(
        model,
        run_name=f"fault test {fp}",
        params={"fp": fp},
        metrics={"rows": float(len(X))},
        version_tags={**TAGS, TAG_FINGERPRINT: fp},
        write_files=lambda d: d.mkdir(parents=True, exist_ok=True),
        signature=signature_of(model),
        input_example=input_example(model, X, ts),
        training_config={"fp": fp},
    ).version


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _killed_registration(home: Path, point: str, rows: tuple[Any, Any, Any]) -> None:
    """In a forked child: register a new version and SIGKILL the process at `point`."""
    import mlflow

    model, ts, X = rows
    registry = Registry(RegistrySettings(), home)
    client = registry.client
    if point == "run created":  # the run is RUNNING, nothing logged into it yet

        def log_params(*args: Any, **kwargs: Any) -> None:
            _die()

        mlflow.log_params = log_params
    elif point == "version created":
        create = client.create_model_version

        def create_then_die(*args: Any, **kwargs: Any) -> Any:
            create(*args, **kwargs)
            _die()

        client.create_model_version = create_then_die  # type: ignore[method-assign]
    elif point == "tags half-written":
        set_tag = client.set_model_version_tag
        calls: list[str] = []

        def set_tag_or_die(name: str, version: str, key: str, value: str) -> None:
            if len(calls) == 3:  # data_start, data_end and symbols are written
                _die()
            calls.append(key)
            set_tag(name, version, key, value)

        client.set_model_version_tag = set_tag_or_die  # type: ignore[method-assign,assignment]
    _register(registry, model, ts, X, f"killed at {point}")
    os._exit(3)  # not killed: the patch did not fire


def _kill_at(home: Path, point: str, rows: tuple[Any, Any, Any]) -> None:
    context = multiprocessing.get_context("fork")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork of a threaded process
        child = context.Process(target=_killed_registration, args=(home, point, rows))
        child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL, (point, child.exitcode)


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert line.startswith("error:"), line
    return line


def _runs(registry: Registry) -> dict[str, str]:
    exp = registry.client.get_experiment_by_name(registry.experiment)
    assert exp is not None
    return {r.info.run_id: r.info.status for r in registry.client.search_runs([exp.experiment_id])}


def test_sigkill_during_registration_leaves_nothing_promotable(
    tmp_path: Path, rows: tuple[Any, Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    home = served_home(tmp_path / "home")
    registry = Registry(RegistrySettings(), home)
    assert registry.aliases() == {"production": 1, "candidate": 2}
    before = _runs(registry)

    # 1. killed right after the run was created: a run left RUNNING, no version
    _kill_at(home, "run created", rows)
    orphans = {r: s for r, s in _runs(registry).items() if r not in before}
    [(orphan, status)] = orphans.items()
    assert status == "RUNNING"
    assert registry.client.get_run(orphan).data.tags[RUN_PID].isdigit()
    assert [v.version for v in registry.versions()] == [1, 2]
    assert cli(home, "models", "--repair") == 0
    out = capsys.readouterr().out
    assert f"marked run {orphan} FAILED" in out
    assert _runs(registry)[orphan] == "FAILED"

    # 2. killed right after the version was created, 3. halfway through its tags
    for point in ("version created", "tags half-written"):
        _kill_at(home, point, rows)
        *_, info = registry.versions()  # the newest
        version = info.version
        assert version > 2, point
        assert not info.complete and info.tags[TAG_REGISTRATION] == "incomplete", point
        if point == "tags half-written":  # a range is there, and still it does not count
            assert info.tags["data_end"] == "2025-01-01" and TAG_FINGERPRINT not in info.tags
        assert registry.aliases() == {"production": 1, "candidate": 2}, point
        # models shows it; nothing takes it, not even with --force
        assert cli(home, "models") == 0
        out = capsys.readouterr().out
        assert f"{version} INCOMPLETE" in out and "models --repair" in out
        for args in (("promote", str(version)),
                     ("promote", str(version), "--force", "--reason", "try"),
                     ("canary", str(version))):  # fmt: skip
            assert cli(home, *args) == 1, args
            assert "is incomplete" in _one_error_line(capsys), args
        with pytest.raises(IncompleteVersionError):
            registry.load(version)
        assert registry.aliases() == {"production": 1, "candidate": 2}, point
        if point == "version created":  # cleaned by models --repair
            assert cli(home, "models", "--repair") == 0
            assert f"removed incomplete version {version}" in capsys.readouterr().out
            assert [v.version for v in registry.versions()] == [1, 2]
    # ... and by the next train (register repairs first); its runs end FAILED
    model, ts, X = rows
    fresh = _register(registry, model, ts, X, "after the kills")
    assert [(v.version, v.complete) for v in registry.versions()] == [
        (1, True), (2, True), (fresh, True)
    ]  # fmt: skip
    assert registry.aliases()["candidate"] == fresh
    statuses = _runs(registry)
    assert "RUNNING" not in statuses.values(), statuses
    assert list(statuses.values()).count("FAILED") == 3


def test_promote_and_rollback_load_before_they_move(
    tmp_path: Path, rows: tuple[Any, Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    home = served_home(tmp_path / "home")
    registry = Registry(RegistrySettings(), home)
    model, ts, X = rows
    bad = _register(registry, broken(model), ts, X, "broken")
    registry.set_tags(bad, {"canary_verdict": "passed"})
    before = registry.aliases()
    capsys.readouterr()
    for args in (("promote", str(bad)), ("promote", str(bad), "--force", "--reason", "x")):
        assert cli(home, *args) == 1
        line = _one_error_line(capsys)
        assert f"version {bad} failed its load check" in line and "non-finite" in line, line
        assert "nothing was changed" in line
        assert registry.aliases() == before
    # an out-of-band move (the MLflow UI) put the broken version behind `previous`: not
    # trusted, `previous` is derived from the recorded moves (here: none before production)
    registry.client.set_registered_model_alias(MODEL, "previous", str(bad))
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    assert registry.aliases() == {**before, "previous": bad}
    # a version whose model file is gone: one line, nothing moved
    good = _register(registry, model, ts, X, "files go missing")
    registry.set_tags(good, {"canary_verdict": "passed"})
    source = registry.client.get_model_version_download_uri(MODEL, str(good))
    shutil.rmtree(source.removeprefix("file://"))
    moved = registry.aliases()
    capsys.readouterr()
    assert cli(home, "promote", str(good)) == 1
    assert "failed its load check" in _one_error_line(capsys)
    assert registry.aliases() == moved


def test_a_copied_home_is_self_contained(tmp_path: Path, rows: tuple[Any, Any, Any]) -> None:
    original = served_home(tmp_path / "original")
    Registry(RegistrySettings(), original)  # opened (and relocated from the shared world)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy, symlinks=True)
    registry = Registry(RegistrySettings(), copy)
    assert registry.relocated == (original / "mlflow" / "artifacts").resolve().as_uri()
    shutil.rmtree(original)  # the copy must not need it
    loaded, version = registry.load("production")
    assert version == 1 and loaded.n_states == 4
    model, ts, X = rows
    new = _register(registry, model, ts, X, "in the copy")
    here = (copy / "mlflow" / "artifacts").resolve().as_uri()
    assert registry.client.get_model_version_download_uri(MODEL, str(new)).startswith(here + "/")
    run_id = registry.info(new).run_id
    assert registry.client.get_run(run_id).info.artifact_uri.startswith(here + "/")
    assert not original.exists()
    assert Registry(RegistrySettings(), copy).relocated is None  # once is enough


def test_canary_refuses_a_version_without_a_training_range(tmp_path: Path) -> None:
    from trading.backtest.canary import run_canary

    home = served_home(tmp_path / "home")
    registry = Registry(RegistrySettings(), home)
    assert "data_end" not in registry.info(2).tags
    with pytest.raises(InputError, match="no recorded training range"):
        run_canary(config_for(home), registry, 2)
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_store_failures_are_one_line_and_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.worlds import thin_home

    home = thin_home(tmp_path / "home")
    registry = Registry(RegistrySettings(), home)
    before = registry.aliases()
    # the MLflow database read-only: a write says so in one line
    db = home / "mlflow" / "mlflow.db"
    monkeypatch.setenv("HMMTRADER_REGISTRY__TRACKING_URI", f"sqlite:///file:{db}?mode=ro&uri=true")
    capsys.readouterr()
    assert cli(home, "promote", "2", "--force", "--reason", "read-only store") == 1
    line = _one_error_line(capsys)
    assert "model registry:" in line and "readonly database" in line, line
    # ... and the inference server answers 503 (documented), not 500
    from fastapi.testclient import TestClient

    from serving.inference.app import create_app

    monkeypatch.setenv("HMMTRADER_SERVING__TOKEN", "t0ken-for-this-test")
    with TestClient(create_app(config_for(home))) as client:
        answer = client.post(
            "/promote", json={"version": 2, "force": True, "reason": "read-only store"},
            headers={"Authorization": "Bearer t0ken-for-this-test"},
        )  # fmt: skip
    assert answer.status_code == 503 and "readonly database" in answer.text, answer.text
    monkeypatch.delenv("HMMTRADER_REGISTRY__TRACKING_URI")
    assert registry.aliases() == before

    # production's model files gone: the node stops before trading, in one line, and its
    # session ends clean (the next start does not engage the kill switch)
    shutil.rmtree(
        registry.client.get_model_version_download_uri(MODEL, str(before["production"]))
        .removeprefix("file://")
    )  # fmt: skip
    node = ("node", "--mode", "replay", "--start", "2025-01-01", "--end", "2025-01-01",
            "--max-seconds", "5", "--no-gate")  # fmt: skip
    for _ in range(2):
        assert cli(home, *node) == 1
        captured = capsys.readouterr()
        assert "kill switch ENGAGED" not in captured.out, captured.out
        [line] = captured.err.strip().splitlines()
        assert line.startswith("error:") and "cannot load hmm-regime version" in line, line

"""The model lifecycle against real MLflow stores: `hmmtrader train | models | promote |
rollback` on the default SQLite store, a fresh-process load by alias, bad input that must
leave the registry untouched, and real `mlflow server`s (PostgreSQL and SQLite backends).

Every test copies the shared world's BTCUSDT feature file (one 6-hour synthetic day, made
through the CLI) into its own home. Training runs on the test profile's small search
(tests/profile.py); it is still a real fit.
The tracking servers are started when the module starts (if a server test is selected),
so their ~15-30 s start-up overlaps with the other tests.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.integration.cli_env import cli, config_for, isolated_env
from tests.integration.mlflow_server import MlflowServer
from tests.integration.postgres import (
    database_exists,
    pg_query,
    postgres_database,
    postgres_problem,
    sqlalchemy_uri,
)
from tests.integration.worlds import trained_world
from tests.profile import DAY1, DAY_SECONDS, FAST_TRAINING
from trading.data.lake import Lake
from trading.features.descriptor import features_v1
from trading.features.store import METADATA_KEY, descriptor_of
from trading.regime.catalog import read_catalog
from trading.regime.config import RegimeSettings, RegistrySettings
from trading.regime.pipeline import train_and_register
from trading.regime.pyfunc import output_columns, predict_frame
from trading.regime.registry import Registry, git_commit
from trading.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYMBOL = "BTCUSDT"
DAY = dt.date.fromisoformat(DAY1)
DAY_S = DAY.isoformat()
MODEL = "hmm-regime"


def same_listing(registry: Registry, uri: str | None = None) -> dict[str, Any]:
    """`models` reads MLflow's database directly (trading.regime.catalog): it must list what
    MLflow's client reads, field for field (the tracking URI aside: a server's is its URL)."""
    from hmmtrader.cli.models import _listing

    catalog = read_catalog(uri or registry.uri, MODEL)
    assert catalog is not None
    fast, slow = _listing(catalog), _listing(registry)
    fast.pop("tracking_uri"), slow.pop("tracking_uri")
    assert fast == slow
    return fast


FEATURES_KIND = "features_v1"
TRAIN_ARGS = ("train", "--symbols", SYMBOL, "--start", DAY_S, "--end", DAY_S)
RUN_FILES = {
    "bic_vs_k.png",
    "transition_matrix.png",
    "state_timeline.png",
    "candidates.csv",
    "states.csv",
}
VERSION_TAGS = {
    "data_start", "data_end", "symbols", "feature_version", "git_commit", "seed", "val_bic",
    "state_entropy", "fingerprint",
}  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Loads a model by URI in a new interpreter (tracking URI from MLFLOW_TRACKING_URI only),
# predicts the rows of a parquet file and writes the result; prints what it loaded.
FRESH_PROCESS = r"""
import json, sys
import mlflow.pyfunc
import pandas as pd

model_uri, rows_path, out_path = sys.argv[1:4]
model = mlflow.pyfunc.load_model(model_uri)
frame = pd.read_parquet(rows_path)
model.predict(frame).to_parquet(out_path)
try:
    model.predict(frame.head(50), params={"feature_version": "FEATURES_V1@not-this-one"})
    refused = ""
except Exception as exc:
    refused = f"{type(exc).__name__}: {exc}"
print(json.dumps({"run_id": model.metadata.run_id, "refused": refused}))
"""


# ---- environment and shared data ----------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def fast_env() -> Iterator[None]:
    with isolated_env({}):
        yield


@pytest.fixture(scope="module", autouse=True)
def _start_servers_early(request: pytest.FixtureRequest) -> None:
    """Start the tracking servers first (if a selected test needs them): they become
    healthy while the lake is built and the other tests train."""
    wanted = any(
        "mlflow_servers" in getattr(item, "fixturenames", ())
        for item in request.session.items
        if getattr(item, "module", None) is request.module
    )
    if wanted:
        request.getfixturevalue("mlflow_servers")


@pytest.fixture(scope="module")
def lake_home() -> Path:
    """The shared world: one synthetic day of BTCUSDT (and ETHUSDT) featurized through the
    CLI. Read only: tests copy its BTCUSDT feature file."""
    home = trained_world()
    assert DAY in Lake(home / "lake").days("BINANCE", SYMBOL, FEATURES_KIND)
    return home


def feature_path(home: Path) -> Path:
    return Lake(home / "lake").path("BINANCE", SYMBOL, FEATURES_KIND, DAY)


def new_home(root: Path, lake_home: Path) -> Path:
    """A state root holding a private copy of the module's feature files (only)."""
    home = root / "home"
    src = feature_path(lake_home)
    dst = feature_path(home)
    dst.parent.mkdir(parents=True)
    shutil.copy2(src, dst)
    return home


def feature_frame(home: Path, columns: list[str]) -> pd.DataFrame:
    """Rows of the feature file as a model input, with a 500-step hole in the middle (the
    forward filter must restart there)."""
    table = pq.read_table(feature_path(home), columns=[*columns, "ts_ns"])
    frame = table.to_pandas()
    frame = pd.concat([frame.iloc[1_000:3_000], frame.iloc[3_500:5_000]], ignore_index=True)
    assert np.diff(frame["ts_ns"].to_numpy()).max() > 400 * np.diff(frame["ts_ns"]).min()
    return frame


def fresh_process_predict(
    tracking_uri: str, model_uri: str, frame: pd.DataFrame, tmp: Path
) -> tuple[pd.DataFrame, dict[str, Any]]:
    rows, out = tmp / "rows.parquet", tmp / "predictions.parquet"
    frame.to_parquet(rows)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    env.pop("MLFLOW_REGISTRY_URI", None)
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, model_uri, str(rows), str(out)],
        capture_output=True, text=True, env=env, cwd=tmp, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pd.read_parquet(out), json.loads(proc.stdout.strip().splitlines()[-1])


def snapshot(registry: Registry) -> dict[str, Any]:
    """Everything a failed command must not change: versions with their aliases and tags,
    the aliases, the registered model's tags and the number of logged runs."""
    exp = registry.client.get_experiment_by_name(registry.experiment)
    runs = registry.client.search_runs([exp.experiment_id]) if exp else []
    return {
        "versions": [(v.version, v.aliases, v.tags) for v in registry.versions()],
        "aliases": registry.aliases(),
        "model_tags": dict(registry.client.get_registered_model(registry.name).tags),
        "runs": sorted(r.info.run_id for r in runs),
    }


# ---- 1. the lifecycle through the CLI on the default SQLite store --------------------
def test_cli_lifecycle_on_default_sqlite_store(
    lake_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow
    from mlflow.models import Model

    home = new_home(tmp_path, lake_home)
    capsys.readouterr()
    assert cli(home, *TRAIN_ARGS) == 0
    out = capsys.readouterr().out
    assert f"Registered {MODEL} version 1 as 'candidate'" in out

    registry = Registry(RegistrySettings(), home)
    db = home / "mlflow" / "mlflow.db"
    assert registry.uri == "sqlite:///" + str(db.resolve()) and db.is_file()
    [v1] = registry.versions()
    assert (v1.version, v1.aliases) == (1, ["candidate"])
    assert registry.aliases() == {"candidate": 1}
    # the MLflow UI opens the experiment on its runs (not on an empty traces page)
    experiment = registry.client.get_experiment(
        registry.client.get_run(v1.run_id).info.experiment_id
    )
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    # version tags
    tags = v1.tags
    assert set(tags) >= VERSION_TAGS
    fs = features_v1(load_settings().settings.features)
    assert tags["data_start"] == tags["data_end"] == DAY_S
    assert tags["symbols"] == SYMBOL
    assert tags["feature_version"] == fs.version
    assert tags["git_commit"] == git_commit() and tags["git_commit"]
    assert tags["seed"] == str(RegimeSettings().seed)
    assert re.fullmatch(r"[0-9a-f]{20}", tags["fingerprint"])
    assert tags["kind"] == "train"
    n_states = int(tags["n_states"])
    assert 3 <= n_states <= 4

    # the run: params, metrics, files
    run_data = registry.client.get_run(v1.run_id).data
    params, metrics = run_data.params, run_data.metrics
    assert params["regime.k_min"] == FAST_TRAINING["HMMTRADER_REGIME__K_MIN"] == "3"
    assert params["regime.k_max"] == FAST_TRAINING["HMMTRADER_REGIME__K_MAX"] == "4"
    assert params["regime.restarts"] == "1"
    assert params["regime.max_iter"] == FAST_TRAINING["HMMTRADER_REGIME__MAX_ITER"]
    assert params["policy.max_iter"] == FAST_TRAINING["HMMTRADER_POLICY__MAX_ITER"]
    assert params["symbols"] == SYMBOL and params["data_start"] == params["data_end"] == DAY_S
    assert params["feature_version"] == fs.version
    file_rows = pq.read_metadata(feature_path(home)).num_rows
    # the day's seconds, less the features' warm-up (10 minutes plus the rolling windows)
    assert metrics["rows"] == file_rows == int(tags["rows"]) > DAY_SECONDS - 20 * 60
    assert tags["val_bic"] == f"{metrics['val_bic']:.6g}"
    assert tags["state_entropy"] == f"{metrics['state_entropy']:.6g}"
    assert metrics["n_states"] == n_states
    assert metrics["state_entropy"] > RegimeSettings().min_state_entropy
    names = {a.path for a in registry.client.list_artifacts(v1.run_id)}
    assert names >= RUN_FILES
    files = tmp_path / "run-files"
    for name in RUN_FILES:
        registry.client.download_artifacts(v1.run_id, name, str(files))
    for name in RUN_FILES:
        if name.endswith(".png"):
            assert (files / name).read_bytes()[:8] == PNG_MAGIC, name
    with open(files / "candidates.csv") as fh:
        candidates = list(csv.DictReader(fh))
    assert sorted(int(c["k"]) for c in candidates) == [3, 4]  # restarts=1: one fit per K
    best = min(candidates, key=lambda c: float(c["val_bic"]))
    assert int(best["k"]) == n_states
    assert float(best["val_bic"]) == pytest.approx(metrics["val_bic"], rel=1e-12)
    with open(files / "states.csv") as fh:
        states = list(csv.DictReader(fh))
    assert [float(s["state"]) for s in states] == list(range(n_states))
    assert sum(float(s["share_train"]) for s in states) == pytest.approx(1.0, abs=1e-9)

    # the logged model: signature and input example (the file's first rows)
    model, version = registry.load(1)
    assert version == 1 and model.n_states == n_states
    info = mlflow.models.get_model_info(f"models:/{MODEL}/1")
    assert info.run_id == v1.run_id
    assert info.signature.inputs.input_names() == [*model.columns, "ts_ns"]
    assert info.signature.outputs.input_names() == output_columns(n_states)
    assert info.saved_input_example_info is not None
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{MODEL}/1", dst_path=str(tmp_path / "model")
    )
    example = Model.load(local).load_input_example(local)
    assert list(example.columns) == [*model.columns, "ts_ns"] and len(example) == 5
    head = pq.read_table(feature_path(home), columns=[*model.columns, "ts_ns"]).slice(0, 5)
    np.testing.assert_array_equal(
        example[model.columns].to_numpy(), head.select(model.columns).to_pandas().to_numpy()
    )
    assert example["ts_ns"].tolist() == head.column("ts_ns").to_pylist()

    # same data and config again: version 1 is reused, nothing new logged
    before = snapshot(registry)
    assert cli(home, *TRAIN_ARGS) == 0
    assert "Version 1 was already trained on the same data and config" in capsys.readouterr().out
    assert snapshot(registry) == before

    # promotion needs a passed canary verdict, or --force with a reason
    assert cli(home, "promote", "1") == 1
    err = capsys.readouterr().err
    assert "version 1 has no canary verdict" in err and "--force --reason" in err
    assert cli(home, "promote", "1", "--force") == 1
    assert "--force needs --reason" in capsys.readouterr().err
    assert cli(home, "promote", "1", "--reason", "why") == 1
    assert "--reason is only used with --force" in capsys.readouterr().err
    assert snapshot(registry) == before
    assert cli(home, "promote", "1", "--force", "--reason", "first model") == 0
    assert "production -> version 1 (forced)" in capsys.readouterr().out
    assert registry.aliases() == {"candidate": 1, "production": 1}
    tags = registry.versions()[0].tags
    assert tags["promotion_forced"] == "true" and tags["promotion_reason"] == "first model"
    first = registry.moves()
    assert [(m.seq, m.kind, m.version, m.from_version, m.reason) for m in first] == [
        (1, "force", 1, None, "first model")
    ]
    assert first[0].by.startswith("cli (") and first[0].verdict == "none"
    promoted_once = snapshot(registry)
    assert cli(home, "promote", "production", "--force", "--reason", "again") == 0
    assert "Version 1 already is production: nothing changed." in capsys.readouterr().out
    assert snapshot(registry) == promoted_once  # the first reason is kept

    # version 2: a partial fit of version 1; promoted after a passed canary
    assert cli(home, *TRAIN_ARGS, "--update", "1") == 0
    assert f"Registered {MODEL} version 2 as 'candidate'" in capsys.readouterr().out
    v2 = registry.versions()[1]
    assert (v2.version, v2.tags["kind"], v2.tags["parent_version"]) == (2, "partial_fit", "1")
    assert v2.tags["fingerprint"] != tags["fingerprint"]
    assert registry.aliases() == {"candidate": 2, "production": 1}
    assert cli(home, "promote", "2") == 1
    assert "version 2 has no canary verdict" in capsys.readouterr().err
    registry.set_tags(2, {"canary_verdict": "failed"})
    assert cli(home, "promote", "candidate") == 1
    assert "version 2 has failed" in capsys.readouterr().err
    assert registry.aliases() == {"candidate": 2, "production": 1}
    registry.set_tags(2, {"canary_verdict": "passed"})
    assert cli(home, "promote", "2") == 0
    assert "production -> version 2; previous -> 1" in capsys.readouterr().out
    assert registry.aliases() == {"candidate": 2, "production": 2, "previous": 1}
    v2_tags = registry.versions()[1].tags
    assert v2_tags["promotion_forced"] == "false" and "promotion_reason" not in v2_tags

    # version 3 (partial fit of 2), promoted: rollback steps back twice, then refuses
    assert cli(home, *TRAIN_ARGS, "--update", "2") == 0
    registry.set_tags(3, {"canary_verdict": "passed"})
    assert cli(home, "promote", "3") == 0
    assert registry.aliases() == {"candidate": 3, "production": 3, "previous": 2}
    capsys.readouterr()
    assert cli(home, "rollback") == 0
    assert "production -> version 2 (was 3); previous -> 1" in capsys.readouterr().out
    assert registry.aliases() == {"candidate": 3, "production": 2, "previous": 1}
    assert "rolled_back_at" in registry.versions()[2].tags
    assert cli(home, "rollback") == 0
    assert "production -> version 1 (was 2); previous -> none" in capsys.readouterr().out
    assert registry.aliases() == {"candidate": 3, "production": 1}
    stable = snapshot(registry)
    assert cli(home, "rollback") == 1
    assert "nothing to roll back to: hmm-regime has no previous version" in capsys.readouterr().err
    assert snapshot(registry) == stable
    # five moves (a forced promotion, two promotions, two rollbacks), replayed: the
    # history lists each once, in order, and previous is derived from it
    moves = [(m.kind, m.version, m.from_version) for m in registry.moves()]
    assert moves == [("force", 1, None), ("promote", 2, 1), ("promote", 3, 2),
                     ("rollback", 2, 3), ("rollback", 1, 2)]  # fmt: skip
    guard = registry.guard()
    assert (guard.recorded, guard.previous, guard.anomaly) == (1, None, "")
    assert cli(home, "promote", "3") == 0  # a sixth: previous is 1 again
    assert registry.aliases() == {"candidate": 3, "production": 3, "previous": 1}
    assert cli(home, "rollback") == 0
    assert registry.aliases() == {"candidate": 3, "production": 1}
    assert len(registry.moves()) == 7
    capsys.readouterr()

    # an out-of-band move, as the MLflow UI's alias editor makes it, to a version whose
    # canary failed: detected; every consumer keeps version 1; `models` flags it
    registry.set_tags(3, {"canary_verdict": "failed"})
    registry.client.set_registered_model_alias(MODEL, "production", "3")
    guard = registry.guard()
    assert (guard.alias, guard.recorded, guard.serving, guard.blocked) == (3, 1, 1, True)
    assert "moved to version 3 outside promote/rollback" in guard.anomaly
    assert "has failed" in guard.anomaly and registry.resolve("production") == 1
    assert same_listing(registry)["production"]["blocked"] is True
    assert cli(home, "models", "--history") == 0
    flagged = " ".join(capsys.readouterr().out.split())
    assert (
        "PRODUCTION ALIAS MOVED OUT OF BAND" in flagged and "version 1 is still served" in flagged
    )
    assert "Production moves (oldest first)" in flagged
    # rollback undoes it (a recorded restore); history and previous unchanged by it
    assert cli(home, "rollback") == 0
    assert "production -> version 1 (was 3)" in capsys.readouterr().out
    assert registry.aliases() == {"candidate": 3, "production": 1}
    assert registry.moves()[-1].kind == "restore" and registry.guard().anomaly == ""
    # again, resolved the other way: a forced promotion with a reason records it
    registry.client.set_registered_model_alias(MODEL, "production", "3")
    assert cli(home, "promote", "3", "--force", "--reason", "the UI move was meant") == 0
    guard = registry.guard()
    assert (guard.alias, guard.recorded, guard.previous, guard.anomaly) == (3, 3, 1, "")
    assert registry.aliases() == {"candidate": 3, "production": 3, "previous": 1}
    last = registry.moves()[-1]
    assert (last.kind, last.version, last.from_version) == ("force", 3, 1)
    assert (last.reason, last.verdict) == ("the UI move was meant", "failed")
    assert cli(home, "rollback") == 0  # back to the state the listing below expects
    assert registry.aliases() == {"candidate": 3, "production": 1}
    # the alias removed out of band: version 1 is still used; rollback puts it back
    registry.client.delete_registered_model_alias(MODEL, "production")
    guard = registry.guard()
    assert (guard.alias, guard.serving, guard.blocked) == (None, 1, True)
    assert "removed outside promote/rollback" in guard.anomaly
    assert registry.resolve("production") == 1
    assert cli(home, "rollback") == 0
    assert registry.aliases() == {"candidate": 3, "production": 1}
    assert registry.moves()[-1].kind == "restore" and not registry.guard().anomaly
    capsys.readouterr()

    # `models` lists every version, newest first, with its aliases
    assert cli(home, "models") == 0
    listing = capsys.readouterr().out
    rows = {
        int(m.group(1)): m.group(2) for m in re.finditer(r"^│\s*(\d+)\s*│([^│]*)│", listing, re.M)
    }
    assert list(rows) == [3, 2, 1]
    assert rows[3].strip() == "candidate" and rows[1].strip() == "production"
    assert rows[2].strip() == ""
    assert len(same_listing(registry)["moves"]) == 11
    # MLflow deletes a version by hiding it (a stage); the direct read hides it too
    registry.client.delete_model_version(MODEL, "2")
    assert [v["version"] for v in same_listing(registry)["versions"]] == [1, 3]
    # the benchmark of `models` (new processes; it checks both readers agree)
    capsys.readouterr()
    assert cli(home, "bench", "models", "--repeats", "1") == 0
    bench = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert bench["name"] == "models_cli_wall" and bench["extra"]["versions"] == 2
    assert bench["ratio"] == round(bench["baseline"] / bench["value"], 2)


# ---- shared registry for tests 2 and 3: v1 = production (forced), v2 = candidate ----
@dataclass(frozen=True)
class Promoted:
    home: Path
    uri: str
    run_ids: dict[int, str]


@pytest.fixture(scope="module")
def promoted(lake_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Promoted:
    home = new_home(tmp_path_factory.mktemp("promoted"), lake_home)
    config = config_for(home)
    first = train_and_register(config, [SYMBOL], DAY, DAY)
    registry = Registry(config.settings.registry, home)
    registry.promote(first.registered.version, force=True, reason="test fixture")
    second = train_and_register(config, [SYMBOL], DAY, DAY, update_from="production")
    assert (first.registered.version, second.registered.version) == (1, 2)
    assert registry.aliases() == {"production": 1, "candidate": 2}
    return Promoted(home, registry.uri, {1: first.registered.run_id, 2: second.registered.run_id})


# ---- 2. a fresh process loads production by alias: identical predictions ------------
def test_fresh_process_loads_production_by_alias(promoted: Promoted, tmp_path: Path) -> None:
    registry = Registry(RegistrySettings(tracking_uri=promoted.uri), promoted.home)
    model, version = registry.load("production")
    assert version == 1
    frame = feature_frame(promoted.home, model.columns)
    expected = predict_frame(model, frame)

    got, loaded = fresh_process_predict(
        promoted.uri, f"models:/{MODEL}@production", frame, tmp_path
    )
    assert loaded["run_id"] == promoted.run_ids[1]
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert list(got.columns) == output_columns(model.n_states) and len(got) == 3_500
    # the signature's feature_version parameter is checked in the fresh process too
    assert "FeatureInputError" in loaded["refused"]
    assert f"trained on {model.feature_set.version}" in loaded["refused"]

    # the comparison can tell versions apart: the candidate predicts differently
    candidate, _ = registry.load("candidate")
    other = predict_frame(candidate, frame)
    posterior = [f"posterior_{s}" for s in range(model.n_states)]
    assert not np.array_equal(other[posterior].to_numpy(), expected[posterior].to_numpy())
    # the pyfunc in this process agrees as well
    pyfunc, _ = registry.load_pyfunc("production")
    pd.testing.assert_frame_equal(pyfunc.predict(frame), expected, check_exact=True)


# ---- 3. bad input: a clear error, no new version, no alias change --------------------
def test_bad_input_changes_nothing(
    promoted: Promoted,
    lake_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = new_home(tmp_path, lake_home)  # own (corruptible) feature files
    monkeypatch.setenv("HMMTRADER_REGISTRY__TRACKING_URI", promoted.uri)
    registry = Registry(RegistrySettings(tracking_uri=promoted.uri), home)
    before = snapshot(registry)
    assert [v[0] for v in before["versions"]] == [1, 2]
    rows = pq.read_metadata(feature_path(home)).num_rows
    capsys.readouterr()

    def fails(*args: str) -> str:
        assert cli(home, *args) == 1
        captured = capsys.readouterr()
        assert "Registered" not in captured.out
        assert snapshot(registry) == before, args
        [line] = captured.err.strip().splitlines()  # one line
        return line

    # too few rows for the fitting window
    monkeypatch.setenv("HMMTRADER_REGIME__MIN_TRAIN_ROWS", "10000000")
    err = fails(*TRAIN_ARGS)
    match = re.search(
        r"too few feature rows for the fitting window: ([\d,]+) < 10,000,000 \(([\d,]+) rows", err
    )
    assert match, err
    assert 0.5 * rows < int(match.group(1).replace(",", "")) < 0.8 * rows
    assert int(match.group(2).replace(",", "")) == rows
    monkeypatch.delenv("HMMTRADER_REGIME__MIN_TRAIN_ROWS")

    # features computed with other parameters than the configured ones
    monkeypatch.setenv("HMMTRADER_FEATURES__VOL_WINDOW_S", "30")
    expected_fs = features_v1(load_settings().settings.features)
    err = fails(*TRAIN_ARGS)
    stored = descriptor_of(feature_path(home))
    assert f"are {stored.version} but {expected_fs.version} is expected" in err
    assert "(parameters differ: vol_window_s)" in err
    monkeypatch.delenv("HMMTRADER_FEATURES__VOL_WINDOW_S")

    # NaN in a feature file that still carries its descriptor
    path = feature_path(home)
    table = pq.read_table(path)
    assert METADATA_KEY in table.schema.metadata
    rv = table.column("raw_rv_bp").to_numpy().copy()
    rv[[10, rows // 2, rows - 10]] = np.nan
    spread = table.column("raw_spread_bp").to_numpy().copy()
    spread[rows * 3 // 4] = np.inf
    table = table.set_column(table.schema.get_field_index("raw_rv_bp"), "raw_rv_bp", [rv])
    table = table.set_column(
        table.schema.get_field_index("raw_spread_bp"), "raw_spread_bp", [spread]
    )
    pq.write_table(table, path)
    assert descriptor_of(path) == stored
    err = fails(*TRAIN_ARGS)
    assert f"{SYMBOL} {DAY_S}..{DAY_S}: non-finite feature values in" in err
    assert "raw_spread_bp (1)" in err and "raw_rv_bp (3)" in err

    # a range without feature files, a version that does not exist, an unknown parent
    err = fails("train", "--symbols", SYMBOL, "--start", "2024-02-01", "--end", "2024-02-01")
    assert "no FEATURES_V1 files for BTCUSDT between 2024-02-01 and 2024-02-01" in err
    err = fails("promote", "99")
    assert "hmm-regime has no version 99; versions: 1, 2" in err
    err = fails("promote", "99", "--force", "--reason", "typo")
    assert "no version 99" in err
    err = fails(*TRAIN_ARGS, "--update", "7")
    assert "no version 7; versions: 1, 2" in err
    err = fails("promote", "previous")
    assert "has no 'previous' version yet" in err


# ---- 4. real tracking servers: PostgreSQL and SQLite backend stores ------------------
@dataclass
class Backend:
    server: MlflowServer | None
    problem: str | None  # why there is no server (PostgreSQL unreachable)
    database: str | None = None  # PostgreSQL database name
    sqlite_path: Path | None = None


@pytest.fixture(scope="module")
def mlflow_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Backend]]:
    root = tmp_path_factory.mktemp("mlflow-servers")
    backends: dict[str, Backend] = {}
    with ExitStack() as stack:
        problem = postgres_problem()
        if problem is None:
            database = stack.enter_context(postgres_database())
            server = MlflowServer(sqlalchemy_uri(database), root / "pg-artifacts", root / "pg.log")
            stack.callback(server.stop)
            backends["postgresql"] = Backend(server.launch(), None, database=database)
        else:
            backends["postgresql"] = Backend(None, problem)
        db = root / "server.db"
        server = MlflowServer(f"sqlite:///{db}", root / "sqlite-artifacts", root / "sqlite.log")
        stack.callback(server.stop)
        backends["sqlite"] = Backend(server.launch(), None, sqlite_path=db)
        yield backends
    pg = backends["postgresql"]
    if pg.database is not None:
        assert not database_exists(pg.database)
    for backend in backends.values():
        assert backend.server is None or not backend.server.running()


def backend_rows(backend: Backend, sql: str) -> list[tuple[Any, ...]]:
    """Rows straight from the server's backend store."""
    if backend.database is not None:
        return pg_query(backend.database, sql)
    assert backend.sqlite_path is not None
    with sqlite3.connect(backend.sqlite_path) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_tracking_server_round_trip(
    kind: str,
    mlflow_servers: dict[str, Backend],
    lake_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    backend = mlflow_servers[kind]
    if backend.server is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {backend.problem}")
        pytest.skip(str(backend.problem))
    server = backend.server
    server.wait_healthy()
    home = new_home(tmp_path, lake_home)
    monkeypatch.setenv("HMMTRADER_REGISTRY__TRACKING_URI", server.url)

    assert cli(home, *TRAIN_ARGS) == 0
    assert f"Tracking URI: {server.url}" in capsys.readouterr().out
    registry = Registry(RegistrySettings(tracking_uri=server.url), home)
    [v1] = registry.versions()
    assert (v1.version, v1.aliases) == (1, ["candidate"])
    assert not (home / "mlflow").exists()  # nothing went to the local default store

    # the server's backend store holds the version, its artifacts went through the server
    assert backend_rows(backend, "SELECT name, version FROM model_versions") == [(MODEL, 1)]
    experiment = registry.client.get_experiment_by_name("hmm-regime")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    stored = {p.name for p in server.artifacts.rglob("*") if p.is_file()}
    assert {"regime_model.pkl", "MLmodel", "input_example.json"} | RUN_FILES <= stored

    assert cli(home, "promote", "1", "--force", "--reason", f"{kind} server test") == 0
    assert registry.aliases() == {"candidate": 1, "production": 1}
    aliases = backend_rows(backend, "SELECT alias, version FROM registered_model_aliases")
    assert sorted(aliases) == [("candidate", 1), ("production", 1)]
    # `models` on the server's own database (SQLite or PostgreSQL) lists what the client does
    store = (
        sqlalchemy_uri(backend.database) if backend.database else f"sqlite:///{backend.sqlite_path}"
    )
    assert same_listing(registry, store)["production"]["serving"] == 1

    model, version = registry.load("production")
    assert version == 1
    frame = feature_frame(home, model.columns)
    got, loaded = fresh_process_predict(server.url, f"models:/{MODEL}@production", frame, tmp_path)
    assert loaded["run_id"] == v1.run_id
    pd.testing.assert_frame_equal(got, predict_frame(model, frame), check_exact=True)

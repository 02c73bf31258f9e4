"""Train (or partially refit) from the lake and register the result: the function the
CLI and the Prefect flows call."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trading.data.lake import Lake
from trading.paths import StatePaths
from trading.regime.dataset import Dataset, load_dataset
from trading.regime.registry import (
    TAG_FINGERPRINT,
    Registered,
    Registry,
    fingerprint,
    git_commit,
)
from trading.regime.train import TrainReport, fit_regime_model, partial_fit
from trading.settings import AppConfig, configured_feature_set

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainOutcome:
    registered: Registered
    metrics: dict[str, float]
    report: TrainReport | None  # None when an identical version already existed
    data_rows: int
    model_uri: str


def _data_hash(data: Dataset) -> str:
    h = hashlib.sha256()
    for symbol in data.symbols:
        ts, X = data.frames[symbol]
        h.update(symbol.encode())
        h.update(np.ascontiguousarray(ts).tobytes())
        h.update(np.ascontiguousarray(X).tobytes())
    return h.hexdigest()[:20]


def _training_config(
    config: AppConfig, data: Dataset, kind: str, parent: int | None
) -> dict[str, Any]:
    s = config.settings
    return {
        "kind": kind,
        "parent_version": parent,
        "feature_version": data.feature_set.version,
        "symbols": data.symbols,
        "start": str(data.start),
        "end": str(data.end),
        "regime": s.regime.model_dump(),
        "policy": s.policy.model_dump(),
        "drift": s.drift.model_dump(),
        "data_hash": _data_hash(data),
    }


@dataclass(frozen=True)
class Prepared:
    """What a fresh fit needs, read in the caller's process: the dataset (feature files of
    [start, end] as they are now), its training config and fingerprint. A fit of it can run
    in another process (`fit_prepared`) and be registered later (`register_fitted`)."""

    data: Dataset
    start: dt.date
    end: dt.date
    training_config: dict[str, Any]
    fingerprint: str


def prepare_training(
    config: AppConfig,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    feature_set: str | None = None,
) -> Prepared:
    """Load the feature files of [start, end] and fingerprint the fit (same data and config:
    same fingerprint, so an existing version is reused)."""
    lake = Lake(StatePaths(config.home).lake)
    fs = configured_feature_set(config, feature_set)
    data = load_dataset(lake, config.instruments.venue, list(symbols), start, end, fs)
    training_config = _training_config(config, data, "train", None)
    return Prepared(data, start, end, training_config, fingerprint(training_config))


def fit_prepared(config: AppConfig, prepared: Prepared, progress: Progress | None = None) -> Any:
    """The fit of `prepared` (a RegimeModel and its TrainReport): pure computation, no
    registry, so it can run in a worker process."""
    s = config.settings
    return fit_regime_model(prepared.data, s.regime, s.policy, s.drift, progress)


def existing_version(
    config: AppConfig, prepared: Prepared, registry: Registry | None = None
) -> TrainOutcome | None:
    """The registered version with the same fingerprint (nothing to fit), or None."""
    registry = registry or Registry(config.settings.registry, config.home)
    existing = registry.find_by_fingerprint(prepared.fingerprint)
    if existing is None:
        return None
    info = next(i for i in registry.versions() if i.version == existing)
    return TrainOutcome(
        Registered(existing, info.run_id, reused=True), {}, None, prepared.data.rows,
        registry.model_uri(existing),
    )  # fmt: skip


def train_and_register(
    config: AppConfig,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    update_from: str | None = None,
    progress: Progress | None = None,
    feature_set: str | None = None,
) -> TrainOutcome:
    """Fit on the feature files of [start, end] and register a new `candidate` version.
    With update_from (a version reference), run partial_fit on that version instead.
    feature_set (features_v1, bars_v1) overrides regime.feature_set.
    The same data and config as an existing version reuse it (nothing is registered)."""
    s = config.settings
    registry = Registry(s.registry, config.home)
    if update_from is None:
        prepared = prepare_training(config, symbols, start, end, feature_set=feature_set)
        found = existing_version(config, prepared, registry)
        if found is not None:
            return found
        model, report = fit_prepared(config, prepared, progress)
        return register_fitted(config, prepared, model, report, registry=registry)
    lake = Lake(StatePaths(config.home).lake)
    parent_model, parent = registry.load(update_from)
    data = load_dataset(
        lake, config.instruments.venue, list(symbols), start, end, parent_model.feature_set
    )
    training_config = _training_config(config, data, "partial_fit", parent)
    prepared = Prepared(data, start, end, training_config, fingerprint(training_config))
    found = existing_version(config, prepared, registry)
    if found is not None:
        return found
    model, metrics = partial_fit(parent_model, data, s.regime)
    return register_fitted(config, prepared, model, None, metrics, parent, registry=registry)


def register_fitted(
    config: AppConfig,
    prepared: Prepared,
    model: Any,
    report: TrainReport | None,
    partial_metrics: dict[str, float] | None = None,
    parent: int | None = None,
    *,
    registry: Registry | None = None,
) -> TrainOutcome:
    """Register a fitted model (a fresh fit with its report, or a partial fit of `parent`
    with its metrics) as a new `candidate` version, with its files, tags and pyfunc."""
    s = config.settings
    registry = registry or Registry(s.registry, config.home)
    data, start, end = prepared.data, prepared.start, prepared.end
    fs = data.feature_set
    fp = prepared.fingerprint
    kind = "partial_fit" if parent is not None else "train"
    metrics = report.metrics if report is not None else dict(partial_metrics or {})
    model.info = {
        **model.info,
        "symbols": data.symbols,
        "start": str(start),
        "end": str(end),
        "kind": kind,
        "state_table": report.state_table if report else model.info.get("state_table", []),
    }
    from trading.regime.pyfunc import input_example, signature_of

    first = data.symbols[0]
    ts, X = data.frames[first]
    tags = {
        "data_start": str(start),
        "data_end": str(end),
        "symbols": ",".join(data.symbols),
        "feature_version": data.feature_set.version,
        "git_commit": git_commit(),
        "seed": str(s.regime.seed),
        "kind": kind,
        "n_states": str(model.n_states),
        "rows": str(data.rows),
        "drift_threshold": f"{model.drift_limit():.6g}",
        TAG_FINGERPRINT: fp,
        **{k: f"{v:.6g}" for k, v in metrics.items() if k in _TAGGED_METRICS},
    }
    if parent is not None:
        tags["parent_version"] = str(parent)
    if report is not None and report.k_choice is not None:
        choice = report.k_choice
        # "k_max" / "k_min": the chosen K sits at that edge of the searched range; "false"
        tags["k_at_edge"] = choice.edge or "false"
        tags["k_range"] = f"{s.regime.k_min}..{s.regime.k_max}"

    def write_files(directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if report is not None:
            from trading.regime.plots import write_plots

            write_plots(report, directory)
            _write_tables(report, directory)

    params = (
        report.params
        if report
        else {"kind": kind, "parent_version": parent, "feature_version": fs.version}
    )
    registered = registry.register(
        model,
        run_name=f"{kind} {','.join(data.symbols)} {start}..{end}",
        params={
            **params,
            "symbols": ",".join(data.symbols),
            "data_start": str(start),
            "data_end": str(end),
        },
        metrics={**metrics, "rows": float(data.rows)},
        version_tags=tags,
        write_files=write_files,
        signature=signature_of(model),
        input_example=input_example(model, X, ts),
        training_config=prepared.training_config,
    )
    return TrainOutcome(
        registered, metrics, report, data.rows, registry.model_uri(registered.version)
    )


_TAGGED_METRICS = (
    "val_bic",
    "val_loglik",
    "state_entropy",
    "policy_log_loss",
    "policy_accuracy",
    "partial_fit_loglik_after",
)


def _write_tables(report: TrainReport, directory: Path) -> None:
    import csv
    import json

    with open(directory / "candidates.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "k",
                "restart",
                "seed",
                "train_loglik",
                "val_loglik",
                "val_bic",
                "iterations",
                "converged",
                "fit_s",
                "error",
            ]
        )
        for c in report.candidates:
            writer.writerow(
                [
                    c.k,
                    c.restart,
                    c.seed,
                    c.train_loglik,
                    c.val_loglik,
                    c.val_bic,
                    c.iterations,
                    c.converged,
                    round(c.fit_s, 3),
                    c.error,
                ]
            )
    with open(directory / "states.csv", "w", newline="") as fh:
        states = csv.DictWriter(fh, fieldnames=list(report.state_table[0]))
        states.writeheader()
        states.writerows(report.state_table)
    (directory / "transition_matrix.json").write_text(json.dumps(report.transmat.tolist()))
    (directory / "split.json").write_text(json.dumps(report.split))

"""Gaussian HMM search (K x restarts, held-out log-likelihood per row on a validation split),
stable labels, quality."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from trading.errors import HmmTraderError
from trading.regime.config import RegimeSettings

KMEANS_SAMPLE = 20_000
STICKY = 0.99  # initial self-transition probability


class ModelFitError(HmmTraderError):
    """Training could not produce a usable model (too few rows, degenerate states, ...)."""


@dataclass(frozen=True)
class Candidate:
    """One (K, restart) fit and its scores."""

    k: int
    restart: int
    seed: int
    train_loglik: float
    val_loglik: float  # total log-likelihood of the validation rows
    val_bic: float  # -2 * val_loglik + parameters * ln(validation rows); reported only
    iterations: int
    converged: bool
    fit_s: float
    error: str = ""
    chosen: bool = False
    val_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.error and math.isfinite(self.val_loglik) and math.isfinite(self.val_bic)

    @property
    def val_loglik_per_row(self) -> float:
        return self.val_loglik / self.val_rows if self.val_rows else math.nan


@dataclass(frozen=True)
class KChoice:
    """Which K the search chose and why (see `choose_k`)."""

    k: int
    best_k: int  # the K with the highest held-out log-likelihood per row
    per_k: dict[int, float]  # K -> held-out log-likelihood per row of its best restart
    edge: str  # "" inside the range; "k_max": the curve may still rise; "k_min": fewer may do

    @property
    def at_edge(self) -> bool:
        return bool(self.edge)


def choose_k(candidates: list[Candidate], k_min: int, k_max: int, min_gain: float) -> KChoice:
    """Per K the restart with the highest training log-likelihood stands for it; the chosen
    K is the smallest whose held-out log-likelihood per row is at most `min_gain` below the
    best K's. Per-row figures do not grow with the sample size as BIC's penalty-vs-fit
    balance does. At the edge: the chosen K is k_max (more states might fit better still),
    or k_min > 2 (fewer might do as well)."""
    per_k: dict[int, Candidate] = {}
    for c in candidates:
        if c.ok and (c.k not in per_k or c.train_loglik > per_k[c.k].train_loglik):
            per_k[c.k] = c
    if not per_k:
        raise ValueError("no usable candidate")
    score = {k: c.val_loglik_per_row for k, c in sorted(per_k.items())}
    best_k = max(score, key=lambda k: (score[k], -k))
    k = min(k for k, v in score.items() if v >= score[best_k] - min_gain)
    edge = "k_max" if k == k_max and k_max > k_min else ""
    if k == k_min and k_min > 2 and k_max > k_min:
        edge = "k_min"
    return KChoice(k, best_k, score, edge)


def _quiet_hmmlearn() -> None:
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)


def fit_one(
    X: np.ndarray, lengths: list[int], k: int, settings: RegimeSettings, seed: int
) -> object:
    from hmmlearn.hmm import GaussianHMM
    from sklearn.cluster import KMeans

    _quiet_hmmlearn()
    model = GaussianHMM(
        n_components=k,
        covariance_type=settings.covariance_type,
        n_iter=settings.max_iter,
        tol=settings.tol_per_row * len(X),
        random_state=seed,
        implementation="scaling",
        init_params="c",
    )
    # hmmlearn seeds the means with a 10-run k-means over every row; a seeded subsample
    # gives the same starting points at a fraction of the cost
    rng = np.random.default_rng(seed)
    sample = X[np.sort(rng.choice(len(X), min(len(X), KMEANS_SAMPLE), replace=False))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.means_ = KMeans(k, n_init=3, random_state=seed).fit(sample).cluster_centers_
    # a sticky start (regimes last many steps): hmmlearn's Dirichlet draw can start with
    # near-zero self-transitions, and EM then settles in flickering local optima
    model.startprob_ = np.full(k, 1.0 / k)
    off = (1.0 - STICKY) / (k - 1)
    model.transmat_ = np.full((k, k), off) + np.eye(k) * (STICKY - off)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, lengths)
    return model


def search(
    train: tuple[np.ndarray, list[int]],
    validation: tuple[np.ndarray, list[int]],
    settings: RegimeSettings,
    progress: Callable[[str], None] | None = None,
    step_s: float = 1.0,
) -> tuple[object, list[Candidate], KChoice]:
    """Fit every K in [k_min, k_max] `restarts` times on train. Per K the restart with the
    highest training log-likelihood wins (restarts only fight local optima of EM); across
    K `choose_k` decides by the held-out log-likelihood per validation row and
    regime.k_min_gain_per_row. Validation rows are only scored, never fitted.
    A fit with a state whose expected dwell (step_s / (1 - a_ii)) is below min_dwell_s is
    kept in the table but never chosen: a state that flickers is not a regime."""
    X_train, len_train = train
    X_val, len_val = validation
    candidates: list[Candidate] = []
    models: list[object | None] = []
    for k in range(settings.k_min, settings.k_max + 1):
        for restart in range(settings.restarts):
            seed = settings.seed * 1000 + k * 50 + restart
            began = time.perf_counter()
            try:
                model = fit_one(X_train, len_train, k, settings, seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    train_ll = float(model.score(X_train, len_train))  # type: ignore[attr-defined]
                    val_ll = float(model.score(X_val, len_val))  # type: ignore[attr-defined]
                    val_bic = float(model.bic(X_val, len_val))  # type: ignore[attr-defined]
                monitor = model.monitor_  # type: ignore[attr-defined]
                stay = np.clip(np.diag(model.transmat_), 0.0, 1.0 - 1e-12)  # type: ignore[attr-defined]
                shortest = float((step_s / (1.0 - stay)).min())
                flicker = (
                    f"a state dwells {shortest:.1f} s < min_dwell_s {settings.min_dwell_s}"
                    if shortest < settings.min_dwell_s
                    else ""
                )
                cand = Candidate(
                    k, restart, seed, train_ll, val_ll, val_bic, int(monitor.iter),
                    bool(monitor.converged), time.perf_counter() - began, flicker,
                    val_rows=len(X_val),
                )  # fmt: skip
            except (ValueError, np.linalg.LinAlgError) as exc:
                model = None
                cand = Candidate(
                    k, restart, seed, math.nan, math.nan, math.nan, 0, False,
                    time.perf_counter() - began, str(exc).splitlines()[0][:200],
                    val_rows=len(X_val),
                )  # fmt: skip
            candidates.append(cand)
            models.append(model)
            if progress:
                progress(f"K={k} restart {restart + 1}/{settings.restarts}")
    if not any(c.ok for c in candidates):
        errors = "; ".join(sorted({c.error for c in candidates if c.error}))
        raise ModelFitError(
            f"no HMM fit succeeded for K in {settings.k_min}..{settings.k_max}: {errors}"
        )
    choice = choose_k(candidates, settings.k_min, settings.k_max, settings.k_min_gain_per_row)
    best = max(
        (i for i, c in enumerate(candidates) if c.ok and c.k == choice.k),
        key=lambda i: candidates[i].train_loglik,
    )
    candidates[best] = replace(candidates[best], chosen=True)
    return models[best], candidates, choice


def relabel(model: object, order_stat: np.ndarray) -> np.ndarray:
    """Renumber states in place so `order_stat` (e.g. mean volatility) ascends; return the
    permutation (new state i was old state perm[i])."""
    perm = np.argsort(order_stat, kind="stable")
    m = model
    m.startprob_ = m.startprob_[perm]  # type: ignore[attr-defined]
    m.transmat_ = m.transmat_[perm][:, perm]  # type: ignore[attr-defined]
    m.means_ = m.means_[perm]  # type: ignore[attr-defined]
    if m.covariance_type != "tied":  # type: ignore[attr-defined]
        m._covars_ = m._covars_[perm]  # type: ignore[attr-defined]
    return perm


def full_covariances(model: object) -> np.ndarray:
    return np.asarray(model.covars_, dtype=np.float64)  # type: ignore[attr-defined]


def state_entropy(states: np.ndarray, k: int) -> float:
    """Shannon entropy (nats) of the share of time in each state."""
    share = np.bincount(states, minlength=k) / max(len(states), 1)
    share = share[share > 0]
    return float(max(0.0, -(share * np.log(share)).sum()))


def mean_dwell_steps(states: np.ndarray, resets: np.ndarray, k: int) -> np.ndarray:
    """Mean run length (steps) of each state; runs also end at sequence breaks."""
    if len(states) == 0:
        return np.full(k, np.nan)
    change = np.ones(len(states), dtype=bool)
    change[1:] = (states[1:] != states[:-1]) | resets[1:]
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, len(states)))
    run_state = states[starts]
    out = np.full(k, np.nan)
    for s in range(k):
        runs = lengths[run_state == s]
        if len(runs):
            out[s] = runs.mean()
    return out

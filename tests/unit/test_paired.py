"""The canary's paired test and what follows from it (issue 22, acceptance 1 and 2): a
candidate no better than production is promoted in at most 1 - confidence of 100 seeded
runs, a clearly better one passes, too few trades is "insufficient evidence", production is
held to the same floors, and each on_production_failure action does what it says."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trading.backtest.canary import (
    FAILED,
    INSUFFICIENT,
    PASSED,
    CanaryResult,
    evaluate,
    production_action,
    verdict_dict,
)
from trading.backtest.paired import (
    BETTER,
    IntervalPnl,
    block_bootstrap_means,
    interval_pnl,
    paired_test,
)
from trading.data.window import Window
from trading.node.state import open_state
from trading.settings import AppConfig
from trading.strategy.config import CanarySettings, GuardrailSettings, PairedSettings

NS = 1_000_000_000
DAY_INTERVALS = 288  # a day of 5-minute intervals
SETTINGS = PairedSettings()


def _pnl(values: np.ndarray) -> IntervalPnl:
    return IntervalPnl(0, 300, [float(v) for v in values])


def _ar_returns(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Autocorrelated per-interval PnL (a position held over several intervals)."""
    noise = rng.normal(0, 1.0, n)
    out = np.empty(n)
    out[0] = noise[0]
    for i in range(1, n):
        out[i] = 0.6 * out[i - 1] + noise[i]
    return out + shift


def test_a_candidate_no_better_than_production_is_rarely_promoted() -> None:
    """100 seeded runs: candidate and production draw from the same process (no edge);
    the candidate is 'better' in at most 1 - confidence of them."""
    promoted = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        common = _ar_returns(rng, DAY_INTERVALS)  # the market both trade
        cand = common + _ar_returns(rng, DAY_INTERVALS)
        prod = common + _ar_returns(rng, DAY_INTERVALS)
        settings = SETTINGS.model_copy(update={"seed": seed})
        test = paired_test(_pnl(cand), _pnl(prod), 40, 40, settings)
        promoted += test.better
    print(f"no edge: promoted in {promoted} of 100 seeded runs (allowed {1 - 0.9:.0%})")
    assert promoted <= round(100 * (1 - SETTINGS.confidence))


def test_an_identical_candidate_is_never_better() -> None:
    rng = np.random.default_rng(1)
    same = _ar_returns(rng, DAY_INTERVALS)
    test = paired_test(_pnl(same), _pnl(same), 30, 30, SETTINGS)
    assert test.verdict == "not_better" and test.mean_diff_usd == 0.0 and test.p_better == 0.0


def test_a_clearly_better_candidate_passes() -> None:
    passed = 0
    for seed in range(20):
        rng = np.random.default_rng(1000 + seed)
        common = _ar_returns(rng, DAY_INTERVALS)
        cand = common + _ar_returns(rng, DAY_INTERVALS, shift=1.2)
        prod = common + _ar_returns(rng, DAY_INTERVALS)
        test = paired_test(
            _pnl(cand), _pnl(prod), 40, 40, SETTINGS.model_copy(update={"seed": seed})
        )
        passed += test.better
        assert test.candidate_trades == 40 and test.intervals == DAY_INTERVALS
    assert passed == 20
    assert test.ci_low_usd > 0 and test.p_better > 0.95 and test.mean_diff_usd > 0.5
    assert "P(better)" in test.text()


def test_too_few_trades_is_insufficient_evidence_never_a_pass() -> None:
    rng = np.random.default_rng(3)
    cand = _ar_returns(rng, DAY_INTERVALS, shift=5.0)  # hugely better, on 3 + 2 trades
    prod = _ar_returns(rng, DAY_INTERVALS)
    test = paired_test(_pnl(cand), _pnl(prod), 3, 2, SETTINGS)
    assert test.verdict == INSUFFICIENT and not test.better
    assert "5 trade(s) on both sides together, fewer than 10" in test.reason
    short = paired_test(_pnl(cand[:6]), _pnl(prod[:6]), 30, 30, SETTINGS)
    assert short.verdict == INSUFFICIENT and "6 interval(s)" in short.reason


def test_the_bootstrap_is_seeded_and_keeps_blocks() -> None:
    diff = np.arange(10, dtype=float)
    a = block_bootstrap_means(diff, 3, 500, seed=5)
    assert np.array_equal(a, block_bootstrap_means(diff, 3, 500, seed=5))
    assert not np.array_equal(a, block_bootstrap_means(diff, 3, 500, seed=6))
    one = block_bootstrap_means(np.array([2.0, 2.0, 2.0]), 6, 10, seed=0)
    assert np.allclose(one, 2.0)


def test_interval_pnl_from_a_minute_equity_curve() -> None:
    minutes = np.arange(0, 30) * 60 * NS
    equity = pd.DataFrame({"ts_ns": minutes, "equity_usd": 10_000 + np.arange(30, dtype=float)})
    pnl = interval_pnl(equity, 0, 30 * 60 * NS, 300)
    # boundaries 0, 5, ..., 30 min: equity 10000, 10005, ..., 10025, and 10029 at the end
    assert pnl.values == [5.0, 5.0, 5.0, 5.0, 5.0, 4.0]
    assert IntervalPnl.from_dict(pnl.to_dict()) == pnl


# ---- production held to the same floors, and the three actions --------------------------


def _summary(**values: object) -> dict[str, object]:
    base = {"net_pnl_usd": 5.0, "trades": 12, "state_entropy": 0.8, "nan_count": 0,
            "max_daily_loss_usd": 3.0, "max_state_drawdown_usd": 2.0, "guardrail_blocks": {},
            "sharpe": 2.0, "max_drawdown_usd": 4.0}  # fmt: skip
    return {**base, **values}


def _demo_situation(action: str, config: AppConfig, tmp_path: Path) -> CanaryResult:
    """The demo's nights: production loses on the holdout (fails net_pnl), the candidate
    loses less and wins the paired test, failing net_pnl too."""
    settings = CanarySettings(on_production_failure=action)  # type: ignore[arg-type]
    rng = np.random.default_rng(11)
    common = 0.2 * _ar_returns(rng, DAY_INTERVALS)
    cand = common + 0.2 * _ar_returns(rng, DAY_INTERVALS) - 0.05
    prod = common + 0.2 * _ar_returns(rng, DAY_INTERVALS) - 0.2
    paired = paired_test(_pnl(cand), _pnl(prod), 20, 25, settings.paired)
    assert paired.verdict == BETTER
    candidate = _summary(net_pnl_usd=float(cand.sum()))
    production = _summary(net_pnl_usd=float(prod.sum()))
    assert candidate["net_pnl_usd"] < 0 and production["net_pnl_usd"] < candidate["net_pnl_usd"]
    rules, theirs = evaluate(candidate, production, settings, GuardrailSettings(), paired)
    window = Window(0, DAY_INTERVALS * 300 * NS)
    return CanaryResult(2, 1, window, rules, tmp_path, candidate, production, [], paired,
                        theirs, action)  # fmt: skip


@pytest.mark.parametrize("action", ["alert", "disable_trading", "promote_if_better"])
def test_production_failing_a_floor_and_each_action(
    action: str, config: AppConfig, tmp_path: Path
) -> None:
    result = _demo_situation(action, config, tmp_path)
    verdict = verdict_dict(result)
    floors = verdict["production_floors"]
    assert floors["version"] == 1 and floors["passed"] is False
    assert floors["failed_rules"] == ["net_pnl"] and floors["action"] == action
    assert verdict["paired"]["verdict"] == BETTER
    state = open_state(config)
    said = production_action(config, result)
    assert said is not None and "production version 1 fails the canary floor(s) net_pnl" in said
    if action == "promote_if_better":
        # the candidate fails only what production fails, and wins the paired test
        assert result.verdict == PASSED and verdict["waived_rules"] == ["net_pnl"]
        assert "waived" in said
    else:
        assert result.verdict == FAILED and verdict["failed_rules"] == ["net_pnl"]
    switch = state.switch()
    if action == "disable_trading":
        assert switch.engaged and switch.changed_by == "canary"
        assert "fails the canary floor(s) net_pnl" in switch.reason
    else:
        assert not switch.engaged


def test_promote_if_better_waives_nothing_production_passes(
    config: AppConfig, tmp_path: Path
) -> None:
    """The candidate also fails a floor production meets (NaN): nothing is waived."""
    result = _demo_situation("promote_if_better", config, tmp_path)
    rules, theirs = evaluate(
        {**result.candidate, "nan_count": 2}, result.production,
        CanarySettings(on_production_failure="promote_if_better"), GuardrailSettings(),
        result.paired,
    )  # fmt: skip
    assert not any(r.waived for r in rules)
    bad = dataclasses.replace(result, rules=rules, production_rules=theirs)
    assert bad.verdict == FAILED and set(bad.failed_rules) == {"net_pnl", "nan"}


def test_insufficient_evidence_is_its_own_verdict(config: AppConfig, tmp_path: Path) -> None:
    settings = CanarySettings()
    rng = np.random.default_rng(2)
    cand, prod = _ar_returns(rng, DAY_INTERVALS, 1.0), _ar_returns(rng, DAY_INTERVALS)
    paired = paired_test(_pnl(cand), _pnl(prod), 4, 3, settings.paired)
    rules, theirs = evaluate(_summary(trades=4), _summary(trades=3), settings,
                             GuardrailSettings(), paired)  # fmt: skip
    result = CanaryResult(2, 1, Window(0, NS), rules, tmp_path, _summary(), _summary(), [],
                          paired, theirs)  # fmt: skip
    assert result.verdict == INSUFFICIENT and not result.passed
    verdict = verdict_dict(result)
    assert verdict["verdict"] == "insufficient_evidence"
    assert verdict["paired"]["ci_low_usd"] is None  # NaN is not JSON
    assert production_action(config, result) is None  # production passed its floors

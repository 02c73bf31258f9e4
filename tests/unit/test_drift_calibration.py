"""Drift threshold calibrated on the training window (issue 20, acceptance 4): at most 5 %
of the training rows lie above the model's drift threshold, on the synthetic tick market
and on the real month of 1-minute bars; the threshold is recorded with the model and is
the one the compiled kernel uses."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tests.regime_fixtures import fitted_model, real_fitted_model, real_settings
from trading.regime import kernel
from trading.regime.config import DriftSettings, RegimeSettings
from trading.regime.dataset import walk_forward
from trading.regime.pyfunc import write_artifacts
from trading.regime.train import calibrate_drift, drift_scores

MAX_SHARE_ABOVE = 0.05


def _share_above(model, data_split) -> tuple[float, np.ndarray]:
    scores = drift_scores(model, data_split)
    return float((scores > model.drift_limit()).mean()), scores


def test_synthetic_ticks_training_rows_below_the_threshold():
    from tests.regime_fixtures import synthetic_dataset

    model, report = fitted_model()
    data, _ = synthetic_dataset()
    regime = RegimeSettings()
    split = walk_forward(data, regime.validation_fraction, regime.embargo_s)
    share, scores = _share_above(model, split.train)
    d = model.drift_settings
    print(
        f"synthetic ticks: threshold {model.drift_limit():.3f} (p{d.calibration_quantile} "
        f"{np.quantile(scores, d.calibration_quantile):.3f}, floor {d.threshold}); "
        f"{share:.2%} of {len(scores):,} training rows above"
    )
    assert share <= MAX_SHARE_ABOVE
    assert report.metrics["drift_train_above_threshold"] == pytest.approx(share, abs=1e-12)
    assert report.metrics["drift_threshold"] == model.drift_limit() == model.drift_threshold


def test_real_bars_training_rows_below_the_threshold():
    from tests.regime_fixtures import real_bars_dataset

    model, _ = real_fitted_model()
    regime, _, drift = real_settings()
    data = real_bars_dataset()
    split = walk_forward(data, regime.validation_fraction, regime.embargo_s)
    share, scores = _share_above(model, split.train)
    fixed = float((scores > drift.threshold).mean())
    print(
        f"real bars: threshold {model.drift_limit():.3f} (median score {np.median(scores):.3f});"
        f" {share:.2%} of {len(scores):,} training rows above it, {fixed:.0%} above the "
        f"configured {drift.threshold}"
    )
    assert share <= MAX_SHARE_ABOVE
    assert model.drift_limit() > drift.threshold  # calibrated above the floor here
    assert fixed > 0.25  # the uncalibrated threshold flags much of the training data


def test_calibration_rule_and_the_kernel_uses_the_recorded_threshold(tmp_path):
    model, _ = real_fitted_model()
    regime, _, drift = real_settings()
    from tests.regime_fixtures import real_bars_dataset

    train = walk_forward(real_bars_dataset(), regime.validation_fraction, regime.embargo_s).train
    scores = drift_scores(model, train)
    # the quantile, floored at drift.threshold; None: the configured threshold as is
    threshold, _ = calibrate_drift(model, train, drift)
    assert threshold == pytest.approx(max(drift.threshold, np.quantile(scores, 0.99)))
    assert threshold == pytest.approx(model.drift_threshold)
    high_floor = DriftSettings(threshold=9.0)
    assert calibrate_drift(model, train, high_floor)[0] == 9.0
    off = DriftSettings(calibration_quantile=None, threshold=0.7)
    assert calibrate_drift(model, train, off)[0] == 0.7
    looser = calibrate_drift(model, train, DriftSettings(calibration_quantile=0.9))[0]
    assert drift.threshold <= looser < threshold

    # the compiled kernel scales confidence by the recorded threshold
    seg = train.segments[0]
    out = model.predict_array(seg.X, seg.ts_ns)
    blind = dataclasses.replace(model, drift_threshold=10.0, _compiled=None)
    out_b = blind.predict_array(seg.X, seg.ts_ns)
    high = out[:, kernel.OUT_DRIFT] > model.drift_limit()
    conf, conf_b = out[:, kernel.OUT_CONFIDENCE], out_b[:, kernel.OUT_CONFIDENCE]
    assert np.array_equal(conf[high], conf_b[high] * model.drift_settings.confidence_scale)
    assert np.array_equal(conf[~high], conf_b[~high])

    # recorded with the model: in the pickled model and the readable drift reference
    files = write_artifacts(model, tmp_path / "model", {})
    with open(files["drift_reference"]) as fh:
        reference = json.load(fh)
    assert reference["threshold"] == pytest.approx(model.drift_limit())


def test_the_training_report_scores_with_the_calibrated_threshold():
    """The policy metrics `train` reports run the kernel with the calibrated threshold, not
    the configured one that calibrating compiled it with."""
    from tests.regime_fixtures import _real_fit, _settings_key

    _, _, drift = real_settings()
    fitted, _ = _real_fit(_settings_key(real_settings()))  # as fit_regime_model left it
    assert fitted._compiled is not None  # the report's metrics and timeline compiled it
    kernel_threshold = fitted._compiled.params[-3][2]
    assert kernel_threshold == fitted.drift_limit() > drift.threshold

"""The replay client's pace: unpaced up to the window (the warm-up) or a recovery's point,
then market time at `speed` times the wall clock from the first paced tick."""

from __future__ import annotations

import pytest

from trading.node.replay import Pacer

S = 1_000_000_000


def test_the_warm_up_is_unpaced_and_the_window_runs_at_speed() -> None:
    window = 1_800 * S  # the window starts 30 minutes in; the warm-up is before it
    pacer = Pacer(speed=100, fast_until_ns=window - 1)
    # the warm-up's 30 minutes of ticks: no wait at all (paced, 18 s at speed 100)
    assert [pacer.wait_s(t * S, now_s=5.0) for t in range(0, 1_800, 60)] == [0.0] * 30
    assert pacer.wait_s(window, now_s=10.0) == 0.0  # the window's first tick: t0
    assert pacer.wait_s(window + 60 * S, now_s=10.0) == pytest.approx(
        0.6
    )  # a minute later, at speed 100
    assert pacer.wait_s(window + 60 * S, now_s=10.5) == pytest.approx(0.1)
    assert pacer.wait_s(window + 120 * S, now_s=20.0) == 0.0  # behind: no wait, no catch-up


def test_speed_zero_never_waits() -> None:
    pacer = Pacer(speed=0, fast_until_ns=0)
    assert all(pacer.wait_s(t * S, now_s=0.0) == 0.0 for t in range(0, 3_600, 60))

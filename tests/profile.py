"""The test profile: the settings (as HMMTRADER_* variables) every integration test and
every process it starts runs on, unless a test says otherwise. Real fits, real backtests,
real servers, on less data and fewer iterations:

- 6-hour synthetic days (synthetic.day_seconds), so a "day" of ticks is a quarter of one;
- a small HMM search (K 3..4, one restart, 40 EM iterations; 20 boosting iterations);
- a 30-minute warm-up before a backtest or replay window (the features are warm by then);
- one process where the product would use two (the canary's backtests, Dask workers):
  two cores are shared by two xdist workers already.
"""

from __future__ import annotations

DAY_SECONDS = 6 * 3600
DAY1, DAY2 = "2025-01-01", "2025-01-02"  # the shared worlds' synthetic days (seed 7)
SYMBOLS = ("BTCUSDT", "ETHUSDT")

FAST_TRAINING = {
    "HMMTRADER_REGIME__RESTARTS": "1",
    "HMMTRADER_REGIME__K_MIN": "3",
    "HMMTRADER_REGIME__K_MAX": "4",
    "HMMTRADER_REGIME__MAX_ITER": "40",
    "HMMTRADER_POLICY__MAX_ITER": "20",
}
SHORT_WARMUP = {"HMMTRADER_BACKTEST__WARMUP_S": "1800"}
ONE_PROCESS = {"HMMTRADER_CANARY__WORKERS": "1", "HMMTRADER_FLOWS__DASK_WORKERS": "1"}
SHORT_DAYS = {"HMMTRADER_SYNTHETIC__DAY_SECONDS": str(DAY_SECONDS)}
PROFILE: dict[str, str] = {**FAST_TRAINING, **SHORT_WARMUP, **ONE_PROCESS, **SHORT_DAYS}
# a thinner synthetic market (2 quotes/s instead of 10, a fifth of the trades), where the
# node, the page or the checks are tested, not the market
THIN = {"HMMTRADER_SYNTHETIC__QUOTE_RATE_HZ": "2", "HMMTRADER_SYNTHETIC__TRADE_RATE_SCALE": "0.2"}

# the flow tests' nights run end to end on 3-hour days (each night trains, backtests and
# validates its own days; what a night decides, not how much it reads, is tested there)
SHORT_NIGHTS = {"HMMTRADER_SYNTHETIC__DAY_SECONDS": str(3 * 3600), **THIN}  # thin, too
# canary floors every candidate meets (a first night promotes on floors) ...
LENIENT: dict[str, str] = {
    "HMMTRADER_CANARY__FLOORS__MIN_NET_PNL_USD": "-100000",
    "HMMTRADER_CANARY__FLOORS__MIN_TRADES": "0",
    "HMMTRADER_STRATEGY__GUARDRAILS__STATE_DRAWDOWN_USD": "100000",
    "HMMTRADER_STRATEGY__GUARDRAILS__DAILY_LOSS_USD": "100000",
}
# ... and a floor no candidate meets
IMPOSSIBLE: dict[str, str] = {"HMMTRADER_CANARY__FLOORS__MIN_TRADES": "100000000"}

"""Backtest harness, fill and fee models, reports and KPIs, the canary gate."""

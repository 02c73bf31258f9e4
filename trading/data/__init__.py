"""Market data: Binance sources, the synthetic regime market, and the Parquet lake."""

"""hmm-trader's domain core: market data, features, quality gate, regime model and
registry, strategy, backtests, nightly steps, trading node. Importable without Prefect,
FastAPI, uvicorn, typer or a server; long work reports progress through callbacks."""

"""hmm-trader domain core: importable without Prefect, FastAPI or any server."""

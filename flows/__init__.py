"""Prefect flows: thin orchestration over trading/ (arrives with the Prefect issue)."""

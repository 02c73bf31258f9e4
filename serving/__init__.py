"""FastAPI inference server (arrives with the serving issue)."""

"""The nightly retrain: its settings, its steps (no Prefect) and the reports of a night."""

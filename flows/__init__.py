"""The Prefect flows and tasks: orchestration, retries, artifacts. Thin: every task calls
one function of trading.nightly.steps, which works without Prefect."""

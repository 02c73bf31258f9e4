# The README's two commands: `make demo` and `make test`. Both set up .venv first.
.PHONY: setup demo test test-fast lint format bench clean

export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false

setup:
	@scripts/bootstrap.sh

demo: setup
	.venv/bin/hmmtrader demo

test: setup
	.venv/bin/pytest

# everyday work: the unit tests and the light integration tests (not marked slow)
test-fast: setup
	.venv/bin/pytest -m "not slow"

lint: setup
	.venv/bin/ruff check trading serving flows hmmtrader tests
	.venv/bin/ruff format --check trading serving flows hmmtrader tests
	.venv/bin/mypy

format: setup
	.venv/bin/ruff format trading serving flows hmmtrader tests
	.venv/bin/ruff check --fix trading serving flows hmmtrader tests

bench: setup
	.venv/bin/hmmtrader bench ingest

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

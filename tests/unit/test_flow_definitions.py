"""prefect.yaml against the flows it deploys (no server: `prefect deploy` and a worker run
them in tests/integration/test_flows_deploy.py): every entrypoint imports to a Prefect flow
whose parameters accept the deployment's defaults, and a bad parameter is refused with its
name before anything runs."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# what an operator must give when running a deployment (the rest has defaults)
REQUIRED = {
    "nightly-retrain": {},
    "canary": {},
    "backfill": {"start": "2024-01-02", "end": "2024-01-03"},
    "simulate": {},
}


def _deployments() -> list[dict[str, Any]]:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return list(spec["deployments"])


def _flow(entrypoint: str) -> Any:
    path, name = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def test_every_deployment_names_a_flow_that_takes_its_parameters() -> None:
    from prefect import Flow

    deployments = _deployments()
    assert {d["name"] for d in deployments} == {"nightly-retrain", "backfill", "canary",
                                                "simulate"}  # fmt: skip
    for deployment in deployments:
        flow = _flow(deployment["entrypoint"])
        assert isinstance(flow, Flow), deployment["entrypoint"]
        defaults = dict(deployment.get("parameters") or {})
        assert set(defaults) <= set(flow.parameters.properties), (deployment["name"], defaults)
        required = REQUIRED[deployment["name"]]
        assert set(flow.parameters.required or []) - set(defaults) == set(required)
        flow.validate_parameters({**defaults, **required})  # the defaults are valid as given
    nightly = _flow("flows/nightly.py:nightly_retrain")
    assert nightly.name == "nightly-retrain"
    assert nightly.validate_parameters({"night": "2024-01-02"})["night"].isoformat() == (
        "2024-01-02"
    )


def test_a_bad_parameter_is_refused_by_name() -> None:
    from prefect.exceptions import ParameterTypeError

    backfill = _flow("flows/nightly.py:backfill")
    with pytest.raises(ParameterTypeError, match="start"):
        backfill.validate_parameters({"start": "not a date", "end": "2024-01-03"})
    simulate = _flow("flows/simulate.py:simulate")
    with pytest.raises(ParameterTypeError, match="nights"):
        simulate.validate_parameters({"nights": "five"})

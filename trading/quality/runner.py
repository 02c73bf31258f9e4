"""Run the suites through a Great Expectations file project under the state root.

One checkpoint per gate kind (quotes, trades, bars, features); each symbol-day file is one
checkpoint run, named "<SYMBOL> <kind> <day>" in Data Docs. Data Docs are built once per
gate run, for its validations (an update per checkpoint run re-renders the site's index
every time: about a second per file, growing with the stored results). The
checkpoint keeps SUMMARY results (exact counts, 20 sample rows): storing COMPLETE results
grows with the failed rows (a trial with 400,000 NaN bids in an 870,000-row day: 20 s and
38 MB of JSON). The failed expectations alone are then re-validated on the same batch with
COMPLETE results (not stored) to get every offending row's position in the file; asking GX
for `unexpected_index_column_names` instead costs 10 s on that day, positions 0.06 s.

Imports Great Expectations: import this module inside functions only.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.exceptions import DataContextError

from trading.quality import data_docs_index
from trading.quality.offline import localize
from trading.quality.suites import open_project

DATASOURCE = "lake"
BATCH_DEFINITION = "symbol-day file"
# (features of another set than FEATURES_V1: an asset named after its suite, e.g. bars_v1)
ASSETS = {"quotes": "quotes", "trades": "trades", "bars": "bars", "features": "features_v1"}
_SUMMARY = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
_COMPLETE = {"result_format": "COMPLETE", "return_unexpected_index_query": False}


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result on one batch."""

    check: str
    expectation_type: str
    kwargs: dict[str, Any]
    success: bool
    row_level: bool  # flags rows (column expectations) rather than the whole table
    unexpected_count: int  # offending rows (1 for a failed table-level expectation)
    positions: np.ndarray  # row positions in the file of every offending row (may be empty)
    observed: Any = None  # table-level expectations: the observed value
    error: str | None = None  # the expectation could not be evaluated


class SuiteRunner:
    """The GX project at `<project_root>/gx` with the given suites, ready to validate."""

    def __init__(self, project_root: Path, suites: dict[str, gx.ExpectationSuite]) -> None:
        self.project_root = project_root
        self.context = open_project(project_root)
        try:
            datasource = self.context.data_sources.get(DATASOURCE)
        except KeyError:
            datasource = self.context.data_sources.add_pandas(DATASOURCE)
        self._batch_definitions: dict[str, Any] = {}
        self._checkpoints: dict[str, gx.Checkpoint] = {}
        self._validated: list[Any] = []  # this run's validation result identifiers
        for kind, suite in suites.items():
            stored, unchanged = _stored_suite(self.context, suite)
            asset_name = suite.name if kind == "features" else ASSETS[kind]
            try:
                asset = datasource.get_asset(asset_name)
            except LookupError:
                asset = datasource.add_dataframe_asset(asset_name)
            try:
                batch_definition = asset.get_batch_definition(BATCH_DEFINITION)
            except KeyError:
                batch_definition = asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)
            checkpoint = (
                _stored_checkpoint(self.context, suite.name, asset_name) if unchanged else None
            )
            if checkpoint is None:
                validation = self.context.validation_definitions.add_or_update(
                    gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=stored)
                )
                checkpoint = self.context.checkpoints.add_or_update(
                    gx.Checkpoint(
                        name=suite.name,
                        validation_definitions=[validation],
                        actions=[],
                        result_format=_SUMMARY,
                    )
                )
            self._checkpoints[kind] = checkpoint
            self._batch_definitions[kind] = batch_definition

    @property
    def data_docs(self) -> Path:
        return data_docs_index(self.project_root)

    def validate(
        self, kind: str, frame: pd.DataFrame, run_name: str, run_time: dt.datetime
    ) -> list[ExpectationOutcome]:
        checkpoint = self._checkpoints[kind]
        result = checkpoint.run(
            batch_parameters={"dataframe": frame},
            run_id=RunIdentifier(run_name=run_name, run_time=run_time),
        )
        ((result_id, suite_result),) = result.run_results.items()
        self._validated.append(result_id)
        outcomes = [_outcome(item) for item in suite_result.results]
        failed: dict[int, Any] = {
            i: item.expectation_config
            for i, (item, outcome) in enumerate(zip(suite_result.results, outcomes, strict=True))
            if not outcome.success and outcome.error is None and outcome.row_level
        }
        if failed:
            batch = self._batch_definitions[kind].get_batch(batch_parameters={"dataframe": frame})
            for i, config in failed.items():
                complete = batch.validate(config.to_domain_obj(), result_format=_COMPLETE)
                index = complete.result.get("unexpected_index_list") or []
                outcomes[i] = replace(outcomes[i], positions=np.asarray(index, dtype=np.int64))
        return outcomes

    def build_docs(self) -> None:
        """Data Docs of this run's validations (and the index); the whole site where none
        exists yet."""
        if self._validated and self.data_docs.is_file():
            self.context.build_data_docs(resource_identifiers=self._validated)
        else:
            self.context.build_data_docs()
        localize(self.data_docs.parent)  # local CSS and JS: the pages render offline


def _suite_content(suite: gx.ExpectationSuite) -> str:
    """What a suite checks: its expectations (type, kwargs, meta, in order) and meta; not
    the ids GX assigns."""
    expectations = [
        [e.configuration.type, e.configuration.kwargs, e.configuration.meta]
        for e in suite.expectations
    ]
    return json.dumps([suite.meta, expectations], sort_keys=True, default=str)


def _stored_suite(context: Any, suite: gx.ExpectationSuite) -> tuple[Any, bool]:
    """The project's stored suite, and whether it already checked what `suite` checks.
    GX's add_or_update compares every expectation with every stored one (quadratic: about
    0.1 s per suite and call, most of a small gate run); an unchanged suite is not
    written again."""
    try:
        stored = context.suites.get(suite.name)
    except DataContextError:
        stored = None
    if stored is not None and _suite_content(stored) == _suite_content(suite):
        return stored, True
    return context.suites.add_or_update(suite), False


def _stored_checkpoint(context: Any, name: str, asset_name: str) -> Any | None:
    """The stored checkpoint of an unchanged suite, when it is the one this runner would
    write (one validation of that suite on the asset's whole-file batch, SUMMARY results,
    no actions); None otherwise."""
    try:
        checkpoint = context.checkpoints.get(name)
    except DataContextError:
        return None
    definitions = checkpoint.validation_definitions
    if len(definitions) != 1 or checkpoint.actions or checkpoint.result_format != _SUMMARY:
        return None
    (definition,) = definitions
    data = definition.data
    same = (
        definition.name == name
        and definition.suite.name == name
        and data.name == BATCH_DEFINITION
        and data.data_asset.name == asset_name
    )
    return checkpoint if same else None


def _exception_message(info: Any) -> str | None:
    """GX reports errors flat ({"raised_exception": ...}) or per metric (nested dicts)."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "the expectation raised an exception")
    for value in info.values():
        message = _exception_message(value)
        if message:
            return message
    return None


def _outcome(item: Any) -> ExpectationOutcome:
    config = item.expectation_config
    meta = config.meta or {}
    error = _exception_message(item.exception_info)
    result = item.result or {}
    count = int(result.get("unexpected_count") or 0)
    if not item.success and count == 0:
        count = 1  # a table-level failure (row count, columns) or an error
    return ExpectationOutcome(
        check=str(meta.get("check", config.type)),
        expectation_type=str(config.type),
        kwargs=dict(config.kwargs),
        success=bool(item.success),
        row_level="unexpected_count" in result,
        unexpected_count=count if not item.success else 0,
        positions=np.zeros(0, dtype=np.int64),
        observed=result.get("observed_value"),
        error=error,
    )

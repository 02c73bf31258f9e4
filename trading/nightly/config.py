"""Settings of the nightly retrain (`flows:` in configs/settings.yaml)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator, model_validator

from trading.frozen import Frozen


class SymbolSet(Frozen):
    """Symbols trained together into one registered model."""

    symbols: list[str] = Field(min_length=1)
    # registered model of this set; default: registry.model_name
    model_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

    @field_validator("symbols")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        names = [s.strip().upper() for s in value]
        if len(set(names)) != len(names):
            raise ValueError(f"a symbol appears twice in {value}")
        return names


class FlowSettings(Frozen):
    """What one night of `nightly-retrain` does.

    Night D: the canary holds out the last `canary.holdout_days` days up to D; training
    uses the `train_days` days before them; features warm up on one more day where the
    lake has it.
    """

    # where new days come from: synthetic (offline, the demo); archive (data.binance.vision
    # spot trades and klines; quotes come from the trading node's recording); lake (only
    # what is there already, e.g. the node's recording)
    source: Literal["synthetic", "archive", "lake"] = "synthetic"
    synthetic_origin: dt.date = dt.date(2024, 1, 1)  # first day of the synthetic market
    synthetic_seed: int = Field(default=7, ge=0)
    train_days: int = Field(default=1, ge=1, le=90)
    symbol_sets: list[SymbolSet] = Field(
        default_factory=lambda: [SymbolSet(symbols=["BTCUSDT", "ETHUSDT"])], min_length=1
    )
    # per-symbol and per-set work: Prefect's thread pool, or a Dask cluster
    task_runner: Literal["threads", "dask"] = "threads"
    max_workers: int = Field(default=4, ge=1, le=64)  # threads
    dask_address: str | None = None  # tcp://host:8786; None: a local cluster per flow run
    dask_workers: int = Field(default=2, ge=1, le=64)  # local cluster processes
    ingest_retries: int = Field(default=3, ge=0, le=20)
    ingest_retry_delay_s: float = Field(default=10.0, ge=0, le=3600)  # doubles per retry

    @model_validator(mode="after")
    def _unique_models(self) -> FlowSettings:
        names = [s.model_name for s in self.symbol_sets]
        if len(self.symbol_sets) > 1 and (None in names or len(set(names)) != len(names)):
            raise ValueError(
                "with several symbol_sets, give each its own model_name (registered models "
                "must differ)"
            )
        return self

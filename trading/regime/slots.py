"""Blue/green model slots: the active version answers, the standby slot holds the one
swapped out (or loaded ahead). The inference server and the node's hot reload share them.

A version is loaded from the registry (`models:/<name>/<version>`), smoke-tested on the
input example it was logged with (the batch pyfunc and the online filter must agree and
give sane numbers), and only then swapped in. The swap is one reference assignment: a
request (or step) that picked up the old model finishes on it. Every model's streams
share one `StreamHistory`, so the version swapped in continues each stream as if it had
seen it from the start of that history.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from trading.errors import HmmTraderError
from trading.regime.model import RegimeModel
from trading.regime.registry import Registry
from trading.regime.smoke import smoke_test, unwrap
from trading.regime.streams import ModelStreams, StreamHistory

log = logging.getLogger("hmmtrader.serving")


class ModelLoadError(HmmTraderError):
    """A version could not be loaded or failed its smoke test; it was not activated."""

    def __init__(self, version: int, stage: str, message: str) -> None:
        super().__init__(f"version {version} failed to {stage}: {message}")
        self.version = version
        self.stage = stage
        self.message = message


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class LoadedModel:
    name: str
    version: int
    model: RegimeModel
    streams: ModelStreams
    loaded_at: str = field(default_factory=now_iso)

    @property
    def feature_version(self) -> str:
        return self.model.feature_set.version

    def info(self) -> dict[str, Any]:
        m = self.model
        return {
            "version": self.version,
            "loaded_at": self.loaded_at,
            "feature_version": m.feature_set.version,
            "columns": m.columns,
            "n_states": m.n_states,
            "horizon_s": m.horizon_s,
            "drift_limit": m.drift_limit(),
            "feature_set": m.feature_set.to_dict(),
        }


def load_version(registry: Registry, version: int, history: StreamHistory) -> LoadedModel:
    """Load and smoke-test one version (blocking: call it off an event loop)."""
    try:
        pyfunc, version = registry.load_pyfunc(version)
        model, example = unwrap(pyfunc)
    except Exception as exc:  # MLflow, unpickling, a missing artifact: all are "load"
        raise ModelLoadError(version, "load", f"{type(exc).__name__}: {exc}") from exc
    try:
        smoke_test(model, example)
    except Exception as exc:
        raise ModelLoadError(version, "pass its smoke test", str(exc)) from exc
    return LoadedModel(registry.name, version, model, ModelStreams(model, history))


class ModelSlots:
    """The active and the standby version; `swap` is the only way a version goes live."""

    def __init__(self) -> None:
        self.active: LoadedModel | None = None
        self.standby: LoadedModel | None = None

    def find(self, version: int) -> LoadedModel | None:
        """The loaded version, if either slot holds it."""
        for loaded in (self.active, self.standby):
            if loaded is not None and loaded.version == version:
                return loaded
        return None

    def swap(self, loaded: LoadedModel) -> LoadedModel | None:
        """Make `loaded` active (its streams rebuilt from the shared history); the version
        it replaces becomes the standby. Returns that version."""
        loaded.streams.clear()
        old = self.active
        self.active = loaded
        if old is not None and old is not loaded:
            self.standby = old
        elif self.standby is loaded:
            self.standby = None
        return old

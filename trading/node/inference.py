"""The node's inference: in process with hot reload, or remote through the serving client.

`ReloadingInference` serves the registry's `production` version in this process, on the
model slots the inference server uses too (trading.regime.slots). A background thread
re-reads the alias every `model_poll_s`; a new version is loaded and smoke-tested there
(off the event loop), then swapped in at the next step with the streams' history (so it
continues each symbol's filter as if it had seen the whole stream). A version that fails
to load or its smoke test is logged and never used.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from trading.features.descriptor import FeatureSet
from trading.regime.slots import LoadedModel, ModelSlots, load_version
from trading.regime.streams import StreamHistory
from trading.strategy.inference import ModelMismatchError

log = logging.getLogger(__name__)


class ReloadingInference:
    def __init__(
        self,
        registry: Any,  # trading.regime.registry.Registry
        alias: str = "production",
        poll_s: float = 10.0,
        history_rows: int = 3600,
    ) -> None:
        self.registry = registry
        self.alias = alias
        self.poll_s = poll_s
        self.history = StreamHistory(history_rows)
        self.slots = ModelSlots()
        self.slots.swap(self._load(registry.resolve(alias)))
        self._next: LoadedModel | None = None
        self.last_error: str | None = None
        self.anomaly = ""  # the production guard's last out-of-band finding ("" none)
        self.swaps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _load(self, version: int) -> LoadedModel:
        return load_version(self.registry, version, self.history)

    @property
    def _active(self) -> LoadedModel:
        assert self.slots.active is not None  # set in __init__
        return self.slots.active

    # the Inference protocol reads these from the active version
    @property
    def version(self) -> str:
        return str(self._active.version)

    @property
    def feature_set(self) -> FeatureSet:
        return self._active.model.feature_set

    @property
    def n_states(self) -> int:
        return self._active.model.n_states

    @property
    def horizon_s(self) -> float:
        return self._active.model.horizon_s

    @property
    def drift_limit(self) -> float:
        return self._active.model.drift_limit()

    def step(self, symbol: str, row: np.ndarray, ts_ns: int) -> np.ndarray:
        if self._next is not None:  # swap on the caller's thread, between two steps
            self.slots.swap(self._next)
            self._next = None
            self.swaps += 1
            log.warning("now trading model version %s (alias %s)", self.version, self.alias)
        return self._active.streams.step(symbol, row, ts_ns)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="model-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def check_now(self) -> None:
        """One poll of the alias (the watcher's loop body)."""
        try:
            if self.alias == "production":  # the guarded version, read once
                guard = self.registry.guard()
                if guard.anomaly and guard.anomaly != self.anomaly:
                    log.error("production alias: %s", guard.anomaly)
                self.anomaly = guard.anomaly
                ref: str | int = self.alias if guard.serving is None else guard.serving
            else:
                ref = self.alias
            version = self.registry.resolve(ref)
        except Exception as exc:  # registry unreachable: keep trading the active version
            self.last_error = f"cannot read alias {self.alias}: {exc}"
            return
        pending = self._next.version if self._next is not None else self._active.version
        if version == pending:
            return
        try:
            candidate = self._load(version)
            if candidate.model.feature_set.raw_columns != self.feature_set.raw_columns:
                raise ModelMismatchError(
                    f"version {version} reads other raw columns than version {self.version}"
                )
        except Exception as exc:
            msg = f"version {version} of alias {self.alias} was not taken: {exc}"
            if msg != self.last_error:
                log.error(msg)
            self.last_error = msg
            return
        self.last_error = None
        self._next = candidate

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.check_now()


def registry_inference(config: Any, alias: str | None = None) -> ReloadingInference:
    from trading.regime.registry import Registry

    s = config.settings
    registry = Registry(s.registry, Path(config.home))
    return ReloadingInference(
        registry,
        alias or s.strategy.model,
        poll_s=s.node.model_poll_s,
        history_rows=s.node.history_rows,
    )

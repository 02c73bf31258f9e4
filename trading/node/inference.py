"""The node's inference: in process with hot reload, or remote through the serving client.

`ReloadingInference` serves the registry's `production` version in this process. A
background thread re-reads the alias every `model_poll_s`; a new version is loaded and
checked there (off the event loop), then taken over at the next step with the streams'
history (so it continues each symbol's filter as if it had seen the whole stream). A
version that fails to load or its smoke test (trading.regime.smoke) is logged and never
used.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from trading.regime.streams import StreamHistory
from trading.strategy.inference import InProcessInference, ModelMismatchError

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
        model, version = registry.load(alias)
        self._active = InProcessInference(model, version, StreamHistory(history_rows))
        self._next: InProcessInference | None = None
        self.last_error: str | None = None
        self.swaps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # the Inference protocol reads these from the active version
    @property
    def version(self) -> str:
        return self._active.version

    @property
    def feature_set(self) -> Any:
        return self._active.feature_set

    @property
    def n_states(self) -> int:
        return self._active.n_states

    @property
    def horizon_s(self) -> float:
        return self._active.horizon_s

    def step(self, symbol: str, row: np.ndarray, ts_ns: int) -> np.ndarray:
        if self._next is not None:  # swap on the caller's thread, between two steps
            self._active, self._next = self._next, None
            self.swaps += 1
            log.warning("now trading model version %s (alias %s)", self.version, self.alias)
        return self._active.step(symbol, row, ts_ns)

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
            version = str(self.registry.resolve(self.alias))
        except Exception as exc:  # registry unreachable: keep trading the active version
            self.last_error = f"cannot read alias {self.alias}: {exc}"
            return
        pending = self._next.version if self._next is not None else self._active.version
        if version == pending:
            return
        try:
            from trading.regime.smoke import load_checked

            model, loaded = load_checked(self.registry, version)
            candidate = InProcessInference(model, loaded, self._active.history)
            if candidate.feature_set.raw_columns != self._active.feature_set.raw_columns:
                raise ModelMismatchError(
                    f"version {loaded} reads other raw columns than version {self.version}"
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

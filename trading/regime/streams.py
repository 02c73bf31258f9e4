"""Online filter streams: one `OnlineRegime` per stream key (a symbol, or a client's
session and symbol), for whichever model is serving.

The recent rows of every stream are kept (`StreamHistory`, shared by all models), so a
model that takes over a stream (a hot swap, a reload) replays them first and answers with
the filter and drift state it would have had if it had seen the stream from the start of
that history. In-process inference and the inference server both use this, so the node
gets the same numbers either way.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

from trading.regime.model import OnlineRegime, RegimeModel


class _Ring:
    __slots__ = ("count", "rows", "start", "ts")

    def __init__(self, capacity: int, width: int) -> None:
        self.rows = np.zeros((capacity, width))
        self.ts = np.zeros(capacity, dtype=np.int64)
        self.start = 0
        self.count = 0

    def append(self, row: np.ndarray, ts_ns: int) -> None:
        cap = len(self.ts)
        i = (self.start + self.count) % cap
        self.rows[i] = row
        self.ts[i] = ts_ns
        if self.count < cap:
            self.count += 1
        else:
            self.start = (self.start + 1) % cap

    def ordered(self) -> tuple[np.ndarray, np.ndarray]:
        idx = (self.start + np.arange(self.count)) % len(self.ts)
        return self.rows[idx], self.ts[idx]


class StreamHistory:
    """The last `capacity` rows (and grid timestamps) of each stream; at most `max_streams`
    streams, the least recently used dropped first."""

    def __init__(self, capacity: int, max_streams: int = 256) -> None:
        self.capacity = capacity
        self.max_streams = max_streams
        self._rings: OrderedDict[Hashable, _Ring] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rings)

    def append(self, key: Hashable, row: np.ndarray, ts_ns: int) -> None:
        if self.capacity == 0:
            return
        ring = self._rings.get(key)
        if ring is None or ring.rows.shape[1] != len(row):
            ring = self._rings[key] = _Ring(self.capacity, len(row))
            while len(self._rings) > self.max_streams:
                self._rings.popitem(last=False)
        else:
            self._rings.move_to_end(key)
        ring.append(row, ts_ns)

    def rows(self, key: Hashable) -> tuple[np.ndarray, np.ndarray] | None:
        ring = self._rings.get(key)
        return ring.ordered() if ring is not None and ring.count else None

    def keys(self) -> list[Hashable]:
        return list(self._rings)


class ModelStreams:
    """One model's online filters by stream key. A stream seen for the first time by this
    model is warmed up on the shared history; every step is recorded in it."""

    def __init__(self, model: RegimeModel, history: StreamHistory) -> None:
        self.model = model
        self.history = history
        self.width = len(model.columns)
        self._filters: OrderedDict[Hashable, OnlineRegime] = OrderedDict()

    def __len__(self) -> int:
        return len(self._filters)

    def clear(self) -> None:
        """Forget every filter (the model is about to take over streams it has not seen
        for a while: they are rebuilt from the history)."""
        self._filters.clear()

    def _filter(self, key: Hashable) -> OnlineRegime:
        online = self._filters.get(key)
        if online is not None:
            self._filters.move_to_end(key)
            return online
        online = self.model.online()
        past = self.history.rows(key)
        if past is not None and past[0].shape[1] == self.width:
            rows, ts = past
            for i in range(len(ts)):
                online.step_array(rows[i], int(ts[i]))
        self._filters[key] = online
        while len(self._filters) > self.history.max_streams:
            self._filters.popitem(last=False)
        return online

    def step(self, key: Hashable, row: np.ndarray, ts_ns: int) -> np.ndarray:
        """Kernel output (kernel.OUT_* layout) for the stream's next row; the array is
        the filter's own buffer (copy it to keep it). Bad rows raise FeatureInputError
        and leave the stream unchanged."""
        out = self._filter(key).step_array(row, ts_ns)
        self.history.append(key, row, ts_ns)
        return out

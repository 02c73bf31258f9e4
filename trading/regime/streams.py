"""Online filter streams: one `OnlineRegime` per stream key (a symbol, or a client's
session and symbol), for whichever model is serving.

The recent rows of every stream are kept (`StreamHistory`, shared by all models), so a
model that takes over a stream (a hot swap, a reload) replays them first and answers with
the filter and drift state it would have had if it had seen the stream from the start of
that history. In-process inference and the inference server both use this, so the node
gets the same numbers either way.

A stream only moves forward: `run` refuses rows at or before the stream's last grid
timestamp (`StreamOrderError`, nothing changed); `forget` restarts a stream on purpose.
Streams may be stepped from several threads (the server computes off its event loop):
the shared history's lock serialises them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

from trading.errors import InputError
from trading.regime import kernel
from trading.regime.model import OnlineRegime, RegimeModel

_FIRST_ROWS = 64  # a ring starts this small and doubles up to its capacity


class StreamOrderError(InputError):
    """Rows for a stream at or before its last step: a stream only moves forward."""


class _Ring:
    """The last `capacity` rows of one stream. Storage grows with the rows seen, so the
    many streams that only ever see a few rows stay small."""

    __slots__ = ("capacity", "count", "rows", "start", "ts")

    def __init__(self, capacity: int, width: int) -> None:
        self.capacity = capacity
        size = min(capacity, _FIRST_ROWS)
        self.rows = np.zeros((size, width))
        self.ts = np.zeros(size, dtype=np.int64)
        self.start = 0
        self.count = 0

    def _grow(self) -> None:
        rows, ts = self.ordered()
        size = min(self.capacity, 2 * len(self.ts))
        self.rows = np.zeros((size, rows.shape[1]))
        self.ts = np.zeros(size, dtype=np.int64)
        self.rows[: len(rows)] = rows
        self.ts[: len(ts)] = ts
        self.start = 0

    def last_ts(self) -> int | None:
        if not self.count:
            return None
        return int(self.ts[(self.start + self.count - 1) % len(self.ts)])

    def append(self, row: np.ndarray, ts_ns: int) -> None:
        if self.count == len(self.ts) < self.capacity:
            self._grow()
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
        self.lock = threading.RLock()  # every model's streams over this history take it

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

    def last_ts(self, key: Hashable) -> int | None:
        ring = self._rings.get(key)
        return ring.last_ts() if ring is not None else None

    def forget(self, key: Hashable) -> None:
        self._rings.pop(key, None)

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
        with self.history.lock:
            self._filters.clear()

    def last_ts(self, key: Hashable) -> int | None:
        """The stream's last grid timestamp (None: a stream not seen, or forgotten)."""
        with self.history.lock:
            online = self._filters.get(key)
            seen = (online.last_ts if online else None, self.history.last_ts(key))
            return max((t for t in seen if t is not None), default=None)

    def forget(self, key: Hashable) -> None:
        """Restart the stream: its filter and its history go."""
        with self.history.lock:
            self._filters.pop(key, None)
            self.history.forget(key)

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
        with self.history.lock:
            out = self._filter(key).step_array(row, ts_ns)
            self.history.append(key, row, ts_ns)
            return out

    def run(self, key: Hashable, rows: np.ndarray, ts_ns: np.ndarray) -> np.ndarray:
        """Kernel output rows for the stream's next rows (checked finite and of the
        model's width by the caller; `ts_ns` increasing). Raises StreamOrderError, with
        the stream unchanged, when the first row is not after the stream's last step."""
        out = np.empty((len(rows), kernel.OUT_POSTERIOR + self.model.n_states))
        with self.history.lock:
            last = self.last_ts(key)
            if last is not None and len(ts_ns) and int(ts_ns[0]) <= last:
                raise StreamOrderError(
                    f"ts_ns {int(ts_ns[0])} is not after this stream's last step {last}: a "
                    "stream only moves forward (send the rows that follow it, or restart the "
                    "stream with reset: true or another session)"
                )
            for i in range(len(rows)):
                out[i] = self.step(key, rows[i], int(ts_ns[i]))
        return out

"""The exchange's ledger: one JSON object per line for every order, fill, cancel and
balance change, in the order they happened. Tests and users read it with `read_ledger`."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


class Ledger:
    """Append-only JSON lines. Each entry has `seq` (1, 2, ...), `event`, `ts_ms` (the
    exchange's market time) and `wall_ms`, then the event's fields. Every line is flushed
    as it is written, so a reader sees what happened up to now."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.seq = 0
        self._lock = threading.Lock()
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                with open(path, encoding="utf-8") as f:
                    self.seq = sum(1 for line in f if line.strip())
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)

    def write(self, event: str, ts_ms: int, **fields: Any) -> dict[str, Any]:
        with self._lock:
            self.seq += 1
            entry = {
                "seq": self.seq,
                "event": event,
                "ts_ms": ts_ms,
                "wall_ms": time.time_ns() // 1_000_000,
                **fields,
            }
            if self._file is not None:
                self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
                self._file.flush()
            return entry

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_ledger(path: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The ledger's entries (of one event kind when given), in order."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                entry = json.loads(line)
                if event is None or entry["event"] == event:
                    out.append(entry)
    return out

"""Benchmarks. Each compares against a baseline in the same run and ends with one JSON
line: {"name", "value", "unit", "baseline", "ratio"} (plus "extra": further figures, where a
bench has them); ratio > 1 means better than baseline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class BenchResult:
    name: str
    value: float
    unit: str
    baseline: float
    ratio: float
    extra: dict[str, float] = field(default_factory=dict)  # further figures (e.g. p99s)

    def to_json(self) -> str:
        data = asdict(self)
        if not self.extra:
            del data["extra"]
        return json.dumps(data)


def best_of(repeats: int, run: Callable[[], int]) -> tuple[float, int]:
    best, rows = float("inf"), 0
    for _ in range(repeats):
        began = time.perf_counter()
        rows = run()
        best = min(best, time.perf_counter() - began)
    return best, rows

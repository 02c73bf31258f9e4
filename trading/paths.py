"""Everything the tool writes lives under one state root, HMMTRADER_HOME (default ./var)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StatePaths:
    home: Path

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    @property
    def cache(self) -> Path:
        return self.home / "cache"

    @property
    def mlflow(self) -> Path:
        return self.home / "mlflow"

    @property
    def prefect(self) -> Path:
        return self.home / "prefect"

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    @property
    def quality(self) -> Path:
        """Data-quality gate: GX project (gx/), issue CSVs (runs/, latest/)."""
        return self.home / "quality"

    @property
    def kill_switch(self) -> Path:
        return self.home / "kill_switch.json"

"""Entry point of the `hmmtrader` console script."""

from __future__ import annotations

import sys

import flows.cli  # noqa: F401  (registers demo, flow ..., bench flow)
import serving.cli  # noqa: F401  (registers serve, bench serve)
from serving import ops_cli  # noqa: F401  (registers ops serve|status|kill|enable|retrain)
from trading.cli import app, run

__all__ = ["app", "main", "run"]


def main() -> None:
    sys.exit(run())

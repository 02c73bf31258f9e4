"""`hmmtrader bench models`: the wall time of `hmmtrader models` on a state root (the
demo's), a new process each time, as a user types it. Baseline: the same listing read
through MLflow's client (what `models` did before it read MLflow's database directly),
also a new process each time. ratio = baseline / value; the goal is value < 2 s."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from hmmtrader.bench import BenchResult
from trading.errors import InputError
from trading.process import child_env, venv_exe

GOAL_S = 2.0

# the baseline's child: the listing through MLflow's client (trading.regime.registry)
_CLIENT = """
import json, sys
from pathlib import Path
from hmmtrader.cli import models
from trading.regime.registry import Registry
from trading.settings import load_settings
config = load_settings(None)
home = Path(sys.argv[1])
settings = config.settings.model_copy(update={"home": home})
config = config.model_copy(update={"settings": settings})
print(json.dumps(models._listing(Registry(config.settings.registry, config.home))))
"""


def _timed(cmd: list[str]) -> tuple[float, dict[str, Any]]:
    began = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), check=False)
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise InputError(f"{cmd[-2]} {cmd[-1]}: {done.stderr.strip()[-500:]}")
    return took, json.loads(done.stdout)


def bench_models(home: Path, repeats: int, console: Console) -> BenchResult:
    listing = [venv_exe("hmmtrader"), "--home", str(home), "models", "--json"]
    client = [sys.executable, "-c", _CLIENT, str(home)]
    _, first = _timed(listing)  # warms the page cache; checks there is something to list
    versions = first.get("versions") or []
    if not versions:
        raise InputError(
            f"no model versions under {home}: run `make demo` (or hmmtrader --home {home} "
            "demo) first"
        )
    fast = [_timed(listing) for _ in range(repeats)]
    slow = [_timed(client) for _ in range(repeats)]
    for (_, a), (_, b) in zip(fast, slow, strict=True):
        a.pop("tracking_uri", None), b.pop("tracking_uri", None)
        if a != b:
            raise InputError("the direct read and MLflow's client listed different things")
    value, baseline = min(t for t, _ in fast), min(t for t, _ in slow)
    console.print(
        f"hmmtrader models --json on {home} ({len(versions)} versions): best of {repeats} "
        f"{value:.2f} s wall (goal < {GOAL_S:.0f} s: {'met' if value < GOAL_S else 'NOT met'}); "
        f"through MLflow's client {baseline:.2f} s; ratio {baseline / value:.1f}x",
        highlight=False,
    )
    return BenchResult(
        "models_cli_wall", round(value, 3), "s", round(baseline, 3), round(baseline / value, 2),
        {"versions": float(len(versions)), "goal_s": GOAL_S},
    )  # fmt: skip

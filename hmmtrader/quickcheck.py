"""The operator handbook's full-stack check (`hmmtrader quickcheck`), one line per check.

inference  the inference server answers /ready with a model version (serving.url)
backtest   a backtest of the production version writes its run directory's CSVs
dashboard  the dashboard's /metrics is reachable (dashboard.url)
ops        the ops API answers /status (ops.url)
canary     a canary of the newest version runs both backtests and records its verdict, and
           the promotion step follows it (promotes with --promote; else a dry run)

Every check runs even when another failed; any failure makes the command exit non-zero.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from trading.data.window import Window, last_hours
from trading.errors import HmmTraderError, InputError
from trading.settings import AppConfig

CHECKS = ("inference", "backtest", "dashboard", "ops", "canary")
RUN_CSVS = ("trades.csv", "guardrails.csv", "state_timeline.csv", "equity.csv")


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass(frozen=True)
class QuickcheckOptions:
    checks: tuple[str, ...] = CHECKS
    hours: float = 1.0  # the backtest and canary window: the last hours of the lake
    candidate: str | None = None  # canary: a version; None: the newest version
    promote: bool = False  # canary: really move production when the candidate passes
    timeout_s: float = 5.0


class CheckFailedError(Exception):
    """A check's failure, with the line to print."""


def _get(url: str, timeout_s: float, what: str, hint: str) -> httpx.Response:
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.TransportError as exc:
        raise CheckFailedError(f"{what} not reachable at {url} ({_why(exc)}): {hint}") from None
    if response.status_code != 200:
        raise CheckFailedError(
            f"{what} answered {response.status_code} at {url}: {response.text[:200]}"
        )
    return response


def _why(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return "connection refused" if "refused" in text.lower() else text


def check_inference(config: AppConfig, opts: QuickcheckOptions) -> str:
    url = config.settings.serving.url.rstrip("/")
    try:
        response = httpx.get(f"{url}/ready", timeout=opts.timeout_s)
    except httpx.TransportError as exc:
        raise CheckFailedError(
            f"inference server not reachable at {url} ({_why(exc)}): start it with "
            "`hmmtrader serve`"
        ) from None
    try:
        ready = response.json()
    except ValueError:
        ready = {}
    if response.status_code not in (200, 503) or "ready" not in ready:
        raise CheckFailedError(
            f"{url}/ready answered {response.status_code}: not an inference server?"
        )
    if not ready["ready"]:
        raise CheckFailedError(f"inference server at {url} is not ready: {ready.get('reason')}")
    return f"{url} ready, {ready.get('model')} version {ready.get('version')}"


def _last_window(config: AppConfig, symbols: list[str], hours: float) -> Window:
    """The last `hours` of the newest lake day that every symbol has."""
    from trading.data.lake import Lake

    try:
        return last_hours(Lake(config.home / "lake"), config.instruments.venue, symbols, hours)
    except InputError as exc:
        raise CheckFailedError(str(exc)) from None


def check_backtest(config: AppConfig, opts: QuickcheckOptions) -> str:
    from trading.backtest.engine import run_backtest
    from trading.regime.registry import Registry
    from trading.strategy.inference import InProcessInference

    symbols = list(config.settings.strategy.symbols)
    window = _last_window(config, symbols, opts.hours)
    registry = Registry(config.settings.registry, config.home)
    version = registry.resolve("production")
    model, _ = registry.load(version)
    with tempfile.TemporaryDirectory(prefix="hmmtrader-quickcheck-") as tmp:
        run_dir = Path(tmp) / "backtest"
        run = run_backtest(config, InProcessInference(model, version), symbols, window, run_dir)
        missing = [n for n in RUN_CSVS if not (run_dir / n).is_file()]
        if missing:
            raise CheckFailedError(f"the backtest wrote no {', '.join(missing)} in {run_dir}")
        steps = sum(1 for _ in (run_dir / "state_timeline.csv").open()) - 1
    if steps <= 0:
        raise CheckFailedError("the backtest's state timeline is empty: the model made no step")
    s = run.summary
    return (
        f"production version {version} on {window}: {', '.join(RUN_CSVS)} written "
        f"({steps} steps, {s['trades']} trades, net PnL {s['net_pnl_usd']:+.2f} USD)"
    )


def check_dashboard(config: AppConfig, opts: QuickcheckOptions) -> str:
    url = config.settings.dashboard.url.rstrip("/")
    text = _get(
        f"{url}/metrics", opts.timeout_s, "dashboard", "start it with `hmmtrader dashboard`"
    ).text
    if "hmmtrader_trading_enabled" not in text:
        raise CheckFailedError(f"{url}/metrics answers but has no hmmtrader_trading_enabled")
    return f"{url}/metrics reachable ({len(text.splitlines())} lines)"


def check_ops(config: AppConfig, opts: QuickcheckOptions) -> str:
    url = config.settings.ops.url.rstrip("/")
    body = _get(
        f"{url}/status", opts.timeout_s, "ops API", "start it with `hmmtrader ops serve`"
    ).json()
    if "trading_enabled" not in body:
        raise CheckFailedError(f"{url}/status answers without trading_enabled: {str(body)[:200]}")
    node = body.get("node") or {}
    return (
        f"{url} answers: trading {'ENABLED' if body['trading_enabled'] else 'DISABLED'}, "
        f"node {'running' if node.get('running') else 'not running'}"
    )


def check_canary(config: AppConfig, opts: QuickcheckOptions) -> str:
    from trading.backtest.canary import run_canary
    from trading.regime.registry import Registry

    registry = Registry(config.settings.registry, config.home)
    versions = registry.versions()
    if not versions:
        raise CheckFailedError(f"{registry.name} has no versions: train one (hmmtrader train)")
    version = (
        registry.resolve(opts.candidate) if opts.candidate else max(v.version for v in versions)
    )
    info = registry.info(version)
    symbols = [s for s in info.tags.get("symbols", "").split(",") if s] or list(
        config.settings.strategy.symbols
    )
    window = _last_window(config, symbols, opts.hours)
    production = registry.production()
    with tempfile.TemporaryDirectory(prefix="hmmtrader-quickcheck-") as tmp:
        result = run_canary(
            config, registry, version, symbols=symbols, window=window,
            run_dir=Path(tmp) / "canary", log_mlflow=False,
        )  # fmt: skip
    recorded = registry.info(version).canary
    expected = result.verdict  # passed, failed or insufficient_evidence
    if recorded != expected:
        raise CheckFailedError(
            f"the canary verdict was not recorded on version {version} ({recorded!r}, "
            f"expected {expected!r})"
        )
    why = (
        f"insufficient evidence: {result.paired.reason}"
        if result.verdict == "insufficient_evidence" and result.paired is not None
        else f"failed: {', '.join(result.failed_rules)}"
    )
    verdict = (
        f"version {version} {expected} against "
        f"{'production ' + str(production) if production else 'no production'} on {window}"
        + ("" if result.passed else f" ({why})")
    )
    if not result.passed:
        return f"{verdict}; not promoted, production stays {production}"
    if production == version:
        return f"{verdict}; it is production already"
    if not opts.promote:
        return f"{verdict}; would promote it (dry run: --promote moves production)"
    before, after = registry.promote(version, by="quickcheck")
    if registry.production() != after:
        raise CheckFailedError(f"promoting version {version} did not move the production alias")
    return f"{verdict}; promoted: production {before} -> {after}"


RUNNERS: dict[str, Callable[[AppConfig, QuickcheckOptions], str]] = {
    "inference": check_inference,
    "backtest": check_backtest,
    "dashboard": check_dashboard,
    "ops": check_ops,
    "canary": check_canary,
}
TITLES = {
    "inference": "inference server healthy",
    "backtest": "backtest produces its CSVs",
    "dashboard": "dashboard /metrics reachable",
    "ops": "ops API answers",
    "canary": "canary + promote cycle",
}


def run_checks(
    config: AppConfig,
    opts: QuickcheckOptions,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    results = []
    for name in opts.checks:
        t0 = time.perf_counter()
        try:
            ok, detail = True, RUNNERS[name](config, opts)
        except CheckFailedError as exc:
            ok, detail = False, str(exc)
        except HmmTraderError as exc:  # the project's own errors carry a usable message
            ok, detail = False, str(exc)
        except Exception as exc:  # an unexpected failure is still one line, not a traceback
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        result = CheckResult(name, ok, detail, time.perf_counter() - t0)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results

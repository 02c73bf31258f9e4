"""Property tests of the risk limits over random price paths and random model outputs.

A small pure-Python market simulator (no Nautilus) drives `Decider.decide` step by step:
a random walk of the mid in bp with randomly switching volatility and rare jumps, random
spreads, book sizes, trades for the VWAP, stale ticks, slow inference, a kill switch that
may engage, a session end, and random model Signals (state 0..4, action -1/0/1,
confidence, edge, drift incl. NaN, vol). Entries are filled at the touch plus slippage
after 0-2 steps (or rejected); closes are filled at the opposite touch after 0-1 steps (or
fail and are retried), with a fee on both sides; fills are fed back to `decider.book`
exactly as the Nautilus strategy does. Runs may cross a UTC midnight.

Properties (the acceptance item of the issue):
- the realized loss of a UTC day (the trough of the day's cumulative realized PnL) never
  exceeds the daily budget plus one order's worst-case loss per symbol that can be open
  at once; the worst-case loss is the largest single-trade loss of the run;
- no regime state's realized drawdown of a day exceeds its cap plus the same slack;
- no entry's notional (at the price it takes) exceeds the symbol's cap, nor with the other
  open positions (at mid) the total cap;
- no two entries within the global flip cooldown, nor of one symbol within its cooldown;
- no order below the min notional (ours and the exchange's), all on the lot grid and
  within the exchange's qty limits.
With one symbol the slack is literally one order's worst-case loss; with two symbols two
positions can be open when the limit is reached, so the slack is two orders' worst-case
loss (DAILY and DD only look at the state when an entry is decided).

Besides, every decision is checked against an independent reading of the rules: closes
(hold, flip, kill, session end) happen exactly when due and are never blocked, and an
entry only happens when every entry guardrail passes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from trading.strategy import guardrails
from trading.strategy.config import GuardrailSettings, StrategySettings, SymbolRisk, limits_of
from trading.strategy.decide import Book, Close, Decider, Enter, Signal, Venue, Vwap
from trading.strategy.guardrails import max_spread_bp
from trading.strategy.risk import NS_PER_DAY

S = 1_000_000_000
SYMBOLS = ("AAAUSDT", "BBBUSDT")
START_PX = {"AAAUSDT": 100.0, "BBBUSDT": 40.0}
# BBB's exchange minimum (12 USD) is above ours (10 USD); max_qty binds below the caps
VENUES = {
    "AAAUSDT": Venue(lot_size=0.001, min_qty=0.001, max_qty=0.55, min_notional_usd=5.0),
    "BBBUSDT": Venue(lot_size=0.01, min_qty=0.01, max_qty=2.0, min_notional_usd=12.0),
}
BASE_QTY = {"AAAUSDT": 2.0, "BBBUSDT": 6.0}
MAX_POSITION_USD = 60.0  # per symbol
MAX_TOTAL_USD = 65.0  # well below the sum of the symbol caps: the total cap binds too
MIN_NOTIONAL_USD = 10.0
FEE = 10e-4  # per side, on the notional
WARMUP_STEPS = 10
EPS = 1e-9


@dataclass(frozen=True)
class Scenario:
    seed: int
    n_symbols: int
    n_steps: int
    start_ns: int
    daily_loss_usd: float
    state_drawdown_usd: float
    flip_cooldown_s: float
    symbol_cooldown_s: float
    hold_s: float
    vol_scale: float
    max_entry_latency: int
    kill_steps: tuple[int, int] | None
    trade_until_step: int | None


@dataclass
class Position:
    side: int
    qty: float
    entry_ns: int
    state: int
    fill_step: int
    filled: bool = False
    fill_px: float = math.nan
    closing: bool = False
    close_step: int = 0


@dataclass
class Run:
    """What the simulator observed; the properties are asserted on it."""

    trade_pnls: list[float] = field(default_factory=list)
    day_trough: dict[int, float] = field(default_factory=dict)  # min cumulative realized
    state_max_dd: dict[tuple[int, int], float] = field(default_factory=dict)  # (day, state)
    entries: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    blocks: dict[str, int] = field(default_factory=dict)
    days: int = 0

    @property
    def worst_trade_loss(self) -> float:
        return max([0.0, *(-p for p in self.trade_pnls)])

    @property
    def max_daily_loss(self) -> float:
        return max([0.0, *(-v for v in self.day_trough.values())])

    @property
    def max_state_dd(self) -> float:
        return max([0.0, *self.state_max_dd.values()])


class _Market:
    """One symbol's simulated market and model."""

    def __init__(self, rng: random.Random, symbol: str, vol_scale: float) -> None:
        self.rng, self.vol_scale = rng, vol_scale
        self.start = START_PX[symbol]
        self.mid = self.start * math.exp(rng.uniform(-0.05, 0.05))
        self.vol_bp = self._new_vol()
        self.book = Book()
        self.state = rng.randrange(5)

    def _new_vol(self) -> float:
        return math.exp(self.rng.uniform(math.log(2.0), math.log(60.0))) * self.vol_scale

    def step(self, now: int, vwap: Vwap) -> None:
        rng = self.rng
        if rng.random() < 0.02:
            self.vol_bp = self._new_vol()
        # a random walk in bp, pulled back towards the start so prices stay plausible
        ret_bp = self.vol_bp * rng.gauss(0.0, 1.0) - 20.0 * math.log(self.mid / self.start)
        if rng.random() < 0.005:  # a jump
            ret_bp += rng.choice((-1, 1)) * rng.uniform(3.0, 8.0) * self.vol_bp
        self.mid *= math.exp(ret_bp / 1e4)
        spread_bp = rng.uniform(3.0, 15.0) if rng.random() < 0.1 else rng.uniform(0.3, 3.0)
        half = self.mid * spread_bp / 2e4
        book = self.book
        book.bid, book.ask = self.mid - half, self.mid + half
        book.bid_size = rng.lognormvariate(0.0, 1.0)
        book.ask_size = rng.lognormvariate(0.0, 1.0)
        book.last_ts_ns = now - 3 * S if rng.random() < 0.02 else now
        for _ in range(rng.randrange(4)):
            px = self.mid * (1 + rng.uniform(-2.0, 2.0) * self.vol_bp / 1e4)
            vwap.add(now, px, rng.lognormvariate(0.0, 1.0))

    def signal(self) -> Signal:
        rng = self.rng
        if rng.random() < 0.05:
            self.state = rng.randrange(5)
        action = rng.choices((-1, 0, 1), weights=(3, 4, 3))[0]
        edge = abs(rng.gauss(0.0, 6.0)) * (action or 1) * (-1 if rng.random() < 0.1 else 1)
        drift = math.nan if rng.random() < 0.01 else rng.uniform(0.0, 0.6)
        inference_ms = 300.0 if rng.random() < 0.01 else rng.uniform(0.1, 5.0)
        return Signal(
            state=self.state,
            action=action,
            confidence=rng.random(),
            exp_edge_bp=edge,
            drift_score=drift,
            vol_bp=self.vol_bp * rng.uniform(0.5, 1.5),
            inference_ms=inference_ms,
        )


def simulate(sc: Scenario) -> Run:
    rng = random.Random(sc.seed)
    symbols = SYMBOLS[: sc.n_symbols]
    settings_ = StrategySettings(
        symbols=list(symbols),
        guardrails=GuardrailSettings(
            min_conf=0.4,
            max_spread_bp=3.0,
            spread_vol_factor=0.25,
            max_total_position_usd=MAX_TOTAL_USD,
            flip_cooldown_s=sc.flip_cooldown_s,
            max_data_age_ms=2000.0,
            max_inference_ms=250.0,
            state_drawdown_usd=sc.state_drawdown_usd,
            daily_loss_usd=sc.daily_loss_usd,
            max_drift=0.5,
            flatten_on_kill=True,
        ),
        execution={"vwap_anchor": True, "vwap_window_s": 60.0, "hold_s": sc.hold_s},
        per_symbol={
            s: SymbolRisk(
                min_notional_usd=MIN_NOTIONAL_USD,
                base_qty=BASE_QTY[s],
                max_position_usd=MAX_POSITION_USD,
                cooldown_s=sc.symbol_cooldown_s,
            )
            for s in symbols
        },
    )
    limits = limits_of(settings_)
    killed = [False]
    trade_from = sc.start_ns + WARMUP_STEPS * S
    trade_until = None if sc.trade_until_step is None else sc.start_ns + sc.trade_until_step * S
    decider = Decider(
        limits,
        {s: VENUES[s] for s in symbols},
        hold_s=1e6,  # limits.hold_s wins
        trade_from_ns=trade_from,
        trade_until_ns=trade_until,
        kill_engaged=lambda: killed[0],
    )
    book = decider.book
    hold_ns = int(sc.hold_s * 1e9)
    markets = {s: _Market(rng, s, sc.vol_scale) for s in symbols}
    vwaps = {s: Vwap(limits.vwap_window_s) for s in symbols}
    positions: dict[str, Position] = {}
    run = Run()
    realized: dict[int, float] = {}  # UTC day -> cumulative realized PnL
    state_pnl: dict[tuple[int, int], float] = {}
    state_peak: dict[tuple[int, int], float] = {}
    last_entry: int | None = None
    last_symbol_entry: dict[str, int] = {}

    def fill_entry(symbol: str) -> None:
        pos = positions[symbol]
        if rng.random() < 0.03:  # rejected by the venue
            book.on_entry_failed(symbol)
            del positions[symbol]
            return
        m = markets[symbol].book
        slip = rng.uniform(0.0, 2.0) / 1e4
        px = m.ask * (1 + slip) if pos.side > 0 else m.bid * (1 - slip)
        book.on_entry_filled(symbol, pos.qty, px)
        pos.filled, pos.fill_px = True, px

    def fill_close(symbol: str, now: int) -> None:
        pos = positions[symbol]
        if rng.random() < 0.03:  # the close failed: the strategy lets the next step retry
            pos.closing = False
            book.positions[symbol].closing = False
            return
        m = markets[symbol].book
        slip = rng.uniform(0.0, 2.0) / 1e4
        px = m.bid * (1 - slip) if pos.side > 0 else m.ask * (1 + slip)
        pnl = pos.side * (px - pos.fill_px) * pos.qty - FEE * pos.qty * (pos.fill_px + px)
        book.on_closed(symbol, pnl, now)
        del positions[symbol]
        run.trade_pnls.append(pnl)
        day = now // NS_PER_DAY
        realized[day] = total = realized.get(day, 0.0) + pnl
        run.day_trough[day] = min(run.day_trough.get(day, 0.0), total)
        key = (day, pos.state)
        state_pnl[key] = pnl_s = state_pnl.get(key, 0.0) + pnl
        state_peak[key] = peak = max(state_peak.get(key, 0.0), pnl_s)
        run.state_max_dd[key] = max(run.state_max_dd.get(key, 0.0), peak - pnl_s)

    for k in range(sc.n_steps):
        now = sc.start_ns + k * S + rng.randrange(S // 2)  # jittered, increasing
        killed[0] = sc.kill_steps is not None and sc.kill_steps[0] <= k < sc.kill_steps[1]
        for s in symbols:
            markets[s].step(now, vwaps[s])
        mids = {s: markets[s].book.mid for s in symbols}
        # fills due now (orders sent in earlier steps)
        for s in symbols:
            pos = positions.get(s)
            if pos is not None and not pos.filled and pos.fill_step <= k:
                fill_entry(s)
            pos = positions.get(s)
            if pos is not None and pos.closing and pos.close_step <= k:
                fill_close(s, now)
        order = list(symbols)
        rng.shuffle(order)
        for s in order:
            m = markets[s]
            sig = m.signal()
            out = decider.decide(s, now, sig, m.book, mids, vwaps[s].value(now))
            pos = positions.get(s)
            if pos is not None:
                # an independent reading of the exit rules: due closes are never blocked
                due = None
                if pos.filled and not pos.closing:
                    if killed[0]:
                        due = "kill"
                    elif trade_until is not None and now >= trade_until:
                        due = "session_end"
                    elif now - pos.entry_ns >= hold_ns:
                        due = "hold"
                    elif sig.action == -pos.side:
                        due = "flip"
                assert out == (Close(due) if due else None), (k, s, out, due)
                if due:
                    run.closes[due] = run.closes.get(due, 0) + 1
                    pos.closing = True
                    pos.close_step = k + rng.choice((0, 0, 1))
                    if pos.close_step == k:
                        fill_close(s, now)
                continue
            assert not isinstance(out, Close), (k, s, out)
            if out is None:
                continue
            # ---- an entry: every rule must hold at decision time ----
            assert isinstance(out, Enter)
            venue, sym = VENUES[s], limits.symbols[s]
            day = now // NS_PER_DAY
            assert not killed[0] and trade_from <= now
            assert trade_until is None or now < trade_until
            assert out.side == sig.action != 0
            assert out.price == (m.book.ask if out.side > 0 else m.book.bid)
            assert sig.confidence >= limits.min_conf and sig.drift_score <= limits.max_drift
            assert sig.inference_ms <= limits.max_inference_ms
            assert now - m.book.last_ts_ns <= limits.max_data_age_ms * 1e6
            assert m.book.spread_bp <= max_spread_bp(sig.vol_bp, limits)
            loss = -realized.get(day, 0.0)
            assert loss < limits.daily_loss_usd, f"step {k}: entry at realized loss {loss:.2f}"
            key = (day, sig.state)
            dd = state_peak.get(key, 0.0) - state_pnl.get(key, 0.0)
            assert dd < limits.state_drawdown_usd, f"step {k}: entry at state drawdown {dd:.2f}"
            # cooldowns ("no two flips within the cooldown")
            if last_entry is not None:
                waited = (now - last_entry) / 1e9
                assert waited >= limits.flip_cooldown_s, f"step {k}: global cooldown {waited}"
            if s in last_symbol_entry:
                waited = (now - last_symbol_entry[s]) / 1e9
                assert waited >= sym.cooldown_s, f"step {k}: {s} cooldown {waited}"
            last_entry = last_symbol_entry[s] = now
            # sizing: min notional, lot grid, exchange qty limits, caps
            notional = out.qty * out.price
            assert notional >= max(sym.min_notional_usd, venue.min_notional_usd) - EPS
            lots = out.qty / venue.lot_size
            assert abs(lots - round(lots)) < 1e-6, out.qty
            assert venue.min_qty - EPS <= out.qty <= venue.max_qty + EPS
            assert notional <= sym.max_position_usd + EPS
            others = sum(p.qty * mids[o] for o, p in positions.items())
            assert others + notional <= limits.max_total_position_usd + EPS
            run.entries += 1
            positions[s] = Position(out.side, out.qty, now, sig.state, k)
            latency = rng.randint(0, sc.max_entry_latency)
            positions[s].fill_step = k + latency
            if latency == 0:
                fill_entry(s)
        assert set(book.positions) == set(positions), (k, book.positions, positions)
    run.blocks = dict(decider.blocks)
    run.days = (sc.start_ns + sc.n_steps * S) // NS_PER_DAY - sc.start_ns // NS_PER_DAY + 1
    return run


def check_limits(sc: Scenario, run: Run) -> None:
    """The loss bounds: budget (or cap) plus one worst-case order per symbol."""
    slack = sc.n_symbols * run.worst_trade_loss
    for day, trough in run.day_trough.items():
        assert -trough <= sc.daily_loss_usd + slack + EPS, (
            f"day {day}: realized loss {-trough:.4f} > budget {sc.daily_loss_usd} "
            f"+ {sc.n_symbols} x worst order loss {run.worst_trade_loss:.4f}"
        )
    for (day, state), dd in run.state_max_dd.items():
        assert dd <= sc.state_drawdown_usd + slack + EPS, (
            f"day {day} state {state}: drawdown {dd:.4f} > cap {sc.state_drawdown_usd} "
            f"+ {sc.n_symbols} x worst order loss {run.worst_trade_loss:.4f}"
        )


@st.composite
def scenarios(draw: st.DrawFn, n_symbols: int) -> Scenario:
    n_steps = draw(st.integers(200, 1500))
    midnight = draw(st.integers(19_000, 20_000)) * NS_PER_DAY
    if draw(st.sampled_from(("cross", "cross", "same day"))) == "cross":  # a UTC midnight
        start_ns = midnight - draw(st.integers(1, n_steps - 1)) * S
    else:
        start_ns = midnight + draw(st.integers(0, 80_000)) * S
    kill_steps = None
    if draw(st.booleans()):
        a = draw(st.integers(0, n_steps))
        kill_steps = (a, a + draw(st.integers(1, 200)))
    trade_until_step = draw(st.none() | st.integers(n_steps // 2, n_steps))
    return Scenario(
        seed=draw(st.integers(0, 2**32 - 1)),
        n_symbols=n_symbols,
        n_steps=n_steps,
        start_ns=start_ns,
        daily_loss_usd=draw(st.sampled_from((2.0, 5.0, 8.0))),
        state_drawdown_usd=draw(st.sampled_from((1.0, 2.0, 3.0))),
        flip_cooldown_s=draw(st.sampled_from((0.0, 1.0, 1.5, 2.0, 3.0))),
        symbol_cooldown_s=draw(st.sampled_from((0.0, 2.0, 5.0, 8.0))),
        hold_s=draw(st.sampled_from((2.0, 5.0, 10.0, 30.0))),
        vol_scale=draw(st.sampled_from((0.5, 1.0, 2.0))),
        max_entry_latency=draw(st.integers(0, 2)),
        kill_steps=kill_steps,
        trade_until_step=trade_until_step,
    )


PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _observe(sc: Scenario, run: Run) -> None:
    for reason in ("DAILY", "DD", "POS", "COOLDOWN"):
        event(f"{reason} blocked: {run.blocks.get(reason, 0) > 0}")
    event(f"realized daily loss beyond the budget: {run.max_daily_loss > sc.daily_loss_usd}")
    event(f"days: {run.days}")
    target(run.max_daily_loss / sc.daily_loss_usd, label="daily loss / budget")
    target(run.max_state_dd / sc.state_drawdown_usd, label="state drawdown / cap")


@PROPERTY_SETTINGS
@given(scenarios(n_symbols=1))
def test_limits_hold_for_one_symbol(sc: Scenario) -> None:
    """One symbol: realized daily loss <= budget + one order's worst-case loss, per-state
    drawdown <= cap + one order's worst-case loss (plus the per-entry properties)."""
    run = simulate(sc)
    _observe(sc, run)
    check_limits(sc, run)


@PROPERTY_SETTINGS
@given(scenarios(n_symbols=2))
def test_limits_hold_for_two_symbols(sc: Scenario) -> None:
    """Two symbols: the slack is one worst-case order per symbol that can be open at once
    (two), for the daily budget and the per-state cap (plus the per-entry properties)."""
    run = simulate(sc)
    _observe(sc, run)
    check_limits(sc, run)


def _fixed(seed: int, n_symbols: int, **overrides: object) -> Scenario:
    base = {
        "seed": seed,
        "n_symbols": n_symbols,
        "n_steps": 1500,
        "start_ns": 19_700 * NS_PER_DAY - 600 * S,  # crosses midnight after 10 minutes
        "daily_loss_usd": 5.0,
        "state_drawdown_usd": 2.0,
        "flip_cooldown_s": 1.5,
        "symbol_cooldown_s": 5.0,
        "hold_s": 10.0,
        "vol_scale": 1.0,
        "max_entry_latency": 2,
        "kill_steps": (640, 700),  # just after midnight: a fresh budget, positions open
        "trade_until_step": 1450,
    }
    return Scenario(**{**base, **overrides})  # type: ignore[arg-type]


def test_the_limits_are_reached() -> None:
    """The properties are not vacuous: on fixed seeds DAILY and DD do block, realized losses
    do go past the budget and the state cap (by less than the slack), and the other
    guardrails and all close reasons happen too."""
    blocks: dict[str, int] = {}
    closes: dict[str, int] = {}
    beyond_budget = beyond_cap = 0
    for n_symbols in (1, 2):
        for seed in range(8):
            sc = _fixed(seed, n_symbols, hold_s=(10.0, 2.0, 30.0, 5.0)[seed % 4])
            run = simulate(sc)
            check_limits(sc, run)
            assert run.entries > 0 and run.days == 2
            for reason, n in run.blocks.items():
                blocks[reason] = blocks.get(reason, 0) + n
            for reason, n in run.closes.items():
                closes[reason] = closes.get(reason, 0) + n
            beyond_budget += run.max_daily_loss > sc.daily_loss_usd
            beyond_cap += run.max_state_dd > sc.state_drawdown_usd
    expected = {"DAILY", "DD", "POS", "COOLDOWN", "KILL", "SPREAD", "MIN_CONF", "DRIFT", "VWAP"}
    expected |= {"LATENCY"}
    assert expected <= set(blocks), blocks
    assert set(closes) == {"hold", "flip", "kill", "session_end"}, closes
    assert beyond_budget > 0 and beyond_cap > 0, (beyond_budget, beyond_cap)


@pytest.mark.parametrize(
    ("disabled", "violated", "daily_loss_usd"),
    [
        (("check_daily", "check_state_drawdown"), "realized loss", 5.0),
        (("check_state_drawdown",), "drawdown", 50.0),  # DAILY would hide a DD failure
        (("check_cooldown",), "cooldown", 5.0),
    ],
)
def test_the_properties_catch_a_broken_guardrail(
    monkeypatch: pytest.MonkeyPatch, disabled: tuple[str, ...], violated: str, daily_loss_usd: float
) -> None:
    """The simulator's checks have teeth: with a guardrail switched off they fail."""
    for name in disabled:
        monkeypatch.setattr(guardrails, name, lambda *args: None)
    failures = []
    for seed in range(4):
        sc = _fixed(seed, n_symbols=2, daily_loss_usd=daily_loss_usd)
        try:
            check_limits(sc, simulate(sc))
        except AssertionError as exc:
            failures.append(str(exc))
    assert failures, f"no property failed with {disabled} disabled"
    assert all(violated in f for f in failures), failures

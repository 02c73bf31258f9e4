"""The node's persistent state: one SQLite file (default HMMTRADER_HOME/node/node.db).

- **Kill switch** (`switch`): engaged or not, why, by whom, and whether engaging asked to
  flatten positions. Survives every restart. `events` keeps the audit trail.
- **Sessions** (`sessions`): one row per node start. A session that never recorded a clean
  exit (crash, SIGKILL, power loss) engages the switch at the next start: the node comes
  back with trading disabled until a person re-enables it (`hmmtrader ops enable`).
- **Status** (`status`): the node's heartbeat snapshot (mode, symbols, model, positions,
  PnL, ML health) that the ops API serves.
- **History** (`history`): one point per heartbeat (equity, PnL, each symbol's state and
  confidence) for the live dashboard's charts; the newest `node.history_points` are kept.
- **Order journal** (`orders`): every order the strategy decided, written before it is
  sent (write-ahead), keyed by what decided it; a recovered replay re-derives the same
  keys and so never counts (or sends as new) an order twice.
- **Spot positions**: Binance spot has no positions, only balances. A paper/testnet/live
  session records the account it trades (`sessions.account`) and the positions it
  started with (`sessions.start_positions`); after a crash, the next start rebuilds each
  position from the last recorded start and the journaled orders since, as the exchange
  filled them (`trading.node.spot`).

Several processes share the file (the node writes, the ops API reads and flips the
switch): WAL mode, short transactions, a busy timeout.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trading.errors import InputError

if TYPE_CHECKING:
    from trading.settings import AppConfig

SCHEMA = """
CREATE TABLE IF NOT EXISTS switch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    engaged INTEGER NOT NULL,
    flatten INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pid INTEGER NOT NULL,
    mode TEXT NOT NULL,
    run_key TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT,
    ended_at TEXT,
    clean INTEGER NOT NULL DEFAULT 0,
    cursor_ns INTEGER NOT NULL DEFAULT 0,
    account TEXT,
    start_positions TEXT
);
CREATE TABLE IF NOT EXISTS status (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    session_id INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL,
    at TEXT NOT NULL,
    market_time TEXT,
    equity_usd REAL,
    realized_pnl_usd REAL,
    unrealized_pnl_usd REAL,
    states TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    run_key TEXT NOT NULL,
    order_key TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    kind TEXT NOT NULL,
    side INTEGER NOT NULL,
    touch_px REAL NOT NULL,
    decided_ns INTEGER NOT NULL,
    session_id INTEGER NOT NULL,
    sent_at TEXT NOT NULL,
    PRIMARY KEY (run_key, order_key)
);
"""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class SwitchState:
    engaged: bool
    flatten: bool
    reason: str
    changed_by: str
    changed_at: str

    @property
    def trading_enabled(self) -> bool:
        return not self.engaged


@dataclass(frozen=True)
class Session:
    id: int
    pid: int
    mode: str
    run_key: str
    started_at: str
    heartbeat_at: str | None
    ended_at: str | None
    clean: bool
    cursor_ns: int
    account: str | None = None
    start_positions: str | None = None  # JSON {symbol: [signed qty, avg px or null]}


@dataclass(frozen=True)
class PositionBasis:
    """What a spot position is rebuilt from: the positions a session of the account started
    with (`base`, none: flat), and the client order ids journaled since (that session's
    and every later one's), by symbol, in the order they were sent."""

    base_session: int | None
    base: dict[str, tuple[str, str | None]]
    orders: dict[str, list[str]]


_SESSION_COLUMNS = (
    "id, pid, mode, run_key, started_at, heartbeat_at, ended_at, clean, cursor_ns, account, "
    "start_positions"
)


def _session(row: tuple[Any, ...]) -> Session:
    return Session(
        id=int(row[0]),
        pid=int(row[1]),
        mode=str(row[2]),
        run_key=str(row[3]),
        started_at=str(row[4]),
        heartbeat_at=row[5],
        ended_at=row[6],
        clean=bool(row[7]),
        cursor_ns=int(row[8]),
        account=row[9],
        start_positions=row[10],
    )


@dataclass(frozen=True)
class StartResult:
    session: Session
    previous: Session | None  # the session before this one
    unclean: bool  # the previous session never recorded a clean exit
    switch: SwitchState


class NodeState:
    """The SQLite file; every method opens its own short connection (safe across threads
    and processes)."""

    def __init__(self, path: Path, *, start_enabled: bool = True) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise InputError(f"{self.path} is a directory; node.kill_db must be a file path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect(begin=False) as db:
                db.executescript(SCHEMA)
                have = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
                for column in ("account", "start_positions"):  # files of earlier versions
                    if column not in have:
                        db.execute(f"ALTER TABLE sessions ADD COLUMN {column} TEXT")
            with self._connect() as db:
                db.execute(
                    "INSERT OR IGNORE INTO switch VALUES (1, ?, 0, ?, 'setup', ?)",
                    (
                        0 if start_enabled else 1,
                        "new state file" if start_enabled else "new state file: disabled",
                        _now(),
                    ),
                )
        except sqlite3.DatabaseError as exc:
            raise InputError(
                f"{self.path}: not a usable node state database ({exc}); move it away to "
                "start with a fresh one (the kill switch will be re-created)"
            ) from None

    @contextmanager
    def _connect(self, begin: bool = True) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a flipped switch survives power loss
            if not begin:
                yield db
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # ---- kill switch ----
    def switch(self) -> SwitchState:
        with self._connect() as db:
            row = db.execute(
                "SELECT engaged, flatten, reason, changed_by, changed_at FROM switch"
            ).fetchone()
        return SwitchState(bool(row[0]), bool(row[1]), row[2], row[3], row[4])

    def engage(self, reason: str, actor: str, *, flatten: bool = True) -> SwitchState:
        """Disable trading. `flatten`: the node also closes open positions (if the
        strategy's guardrails.flatten_on_kill allows); open orders are always cancelled."""
        with self._connect() as db:
            self._set(db, True, flatten, reason, actor)
        return self.switch()

    def enable(self, reason: str, actor: str) -> SwitchState:
        with self._connect() as db:
            self._set(db, False, False, reason, actor)
        return self.switch()

    @staticmethod
    def _set(db: sqlite3.Connection, engaged: bool, flatten: bool, reason: str, who: str) -> None:
        at = _now()
        db.execute(
            "UPDATE switch SET engaged=?, flatten=?, reason=?, changed_by=?, changed_at=?",
            (int(engaged), int(flatten), reason, who, at),
        )
        db.execute(
            "INSERT INTO events (at, action, reason, actor) VALUES (?, ?, ?, ?)",
            (at, "engage" if engaged else "enable", reason, who),
        )

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT at, action, reason, actor FROM events ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [dict(zip(("at", "action", "reason", "actor"), r, strict=True)) for r in rows]

    # ---- sessions ----
    def start_session(
        self, mode: str, run_key: str, pid: int | None = None, account: str | None = None
    ) -> StartResult:
        """Record a node start (`account`: the venue account a paper/testnet/live session
        trades). If the previous session did not end cleanly, engage the switch (without
        flattening: positions stay as they were)."""
        pid = os.getpid() if pid is None else pid
        with self._connect() as db:
            prev_row = db.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions ORDER BY id DESC LIMIT 1"
            ).fetchone()
            previous = _session(prev_row) if prev_row else None
            unclean = previous is not None and not previous.clean
            if unclean:
                assert previous is not None
                self._set(
                    db,
                    True,
                    False,
                    f"unclean shutdown: node session {previous.id} (pid {previous.pid}, "
                    f"{previous.mode}, started {previous.started_at}, last heartbeat "
                    f"{previous.heartbeat_at or 'never'}) did not exit cleanly; "
                    "trading stays disabled until a person re-enables it",
                    "node",
                )
            cur = db.execute(
                "INSERT INTO sessions (pid, mode, run_key, started_at, account) "
                "VALUES (?, ?, ?, ?, ?)",
                (pid, mode, run_key, _now(), account),
            )
            sid = int(cur.lastrowid or 0)
        session = self.session(sid)
        assert session is not None
        return StartResult(session, previous, unclean, self.switch())

    def session(self, session_id: int) -> Session | None:
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id=?", (session_id,)
            ).fetchone()
        return _session(row) if row else None

    def last_session(self) -> Session | None:
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return _session(row) if row else None

    def end_session(self, session_id: int) -> None:
        with self._connect() as db:
            db.execute("UPDATE sessions SET ended_at=?, clean=1 WHERE id=?", (_now(), session_id))

    def set_start_positions(
        self, session_id: int, positions: dict[str, tuple[str, str | None]]
    ) -> bool:
        """Record the positions a session started with (once: True if this call did)."""
        text = json.dumps({k: list(v) for k, v in sorted(positions.items())})
        with self._connect() as db:
            cur = db.execute(
                "UPDATE sessions SET start_positions=? WHERE id=? AND start_positions IS NULL",
                (text, session_id),
            )
            return cur.rowcount == 1

    def position_basis(self, account: str, session_id: int) -> PositionBasis:
        """What session `session_id`'s positions on `account` are rebuilt from: the latest
        earlier session of the account that recorded its start positions, and the orders
        journaled from it on (none recorded: flat, and every journaled order of the
        account)."""
        with self._connect() as db:
            ids = [
                int(r[0])
                for r in db.execute(
                    "SELECT id FROM sessions WHERE account=? AND id<? ORDER BY id",
                    (account, session_id),
                )
            ]
            recorded = db.execute(
                "SELECT id, start_positions FROM sessions WHERE account=? AND id<? AND "
                "start_positions IS NOT NULL ORDER BY id DESC LIMIT 1",
                (account, session_id),
            ).fetchone()
            base_id = int(recorded[0]) if recorded else None
            base = {
                str(k): (str(v[0]), None if v[1] is None else str(v[1]))
                for k, v in (json.loads(recorded[1]) if recorded else {}).items()
            }
            since = [i for i in ids if base_id is None or i >= base_id] + [session_id]
            marks = ",".join("?" * len(since))
            rows = db.execute(
                f"SELECT symbol, client_order_id FROM orders WHERE session_id IN ({marks}) "
                "ORDER BY sent_at",
                since,
            ).fetchall()
        orders: dict[str, list[str]] = {}
        for symbol, client_order_id in rows:
            orders.setdefault(symbol, []).append(client_order_id)
        return PositionBasis(base_id, base, orders)

    def last_cursor(self, run_key: str) -> int:
        """The furthest market time any session of this run reached (replay recovery)."""
        with self._connect() as db:
            row = db.execute(
                "SELECT MAX(cursor_ns) FROM sessions WHERE run_key=?", (run_key,)
            ).fetchone()
            order = db.execute(
                "SELECT MAX(decided_ns) FROM orders WHERE run_key=?", (run_key,)
            ).fetchone()
        return max(int(row[0] or 0), int(order[0] or 0))

    # ---- status snapshot ----
    def heartbeat(
        self, session_id: int, body: dict[str, Any], cursor_ns: int = 0, keep_points: int = 0
    ) -> None:
        """Write the status snapshot; with `keep_points` > 0 also a history point (the
        newest `keep_points` are kept)."""
        at = _now()
        text = json.dumps(body, default=str, allow_nan=False)
        with self._connect() as db:
            if keep_points > 0:
                self._history_point(db, session_id, at, body, keep_points)
            db.execute(
                "UPDATE sessions SET heartbeat_at=?, cursor_ns=MAX(cursor_ns, ?) WHERE id=?",
                (at, cursor_ns, session_id),
            )
            db.execute(
                "INSERT INTO status (id, session_id, updated_at, body) VALUES (1, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET session_id=excluded.session_id, "
                "updated_at=excluded.updated_at, body=excluded.body",
                (session_id, at, text),
            )

    @staticmethod
    def _history_point(
        db: sqlite3.Connection, session_id: int, at: str, body: dict[str, Any], keep: int
    ) -> None:
        regime = body.get("regime") or {}
        states = {
            symbol: {"state": r.get("state"), "confidence": r.get("confidence")}
            for symbol, r in regime.items()
        }
        cur = db.execute(
            "INSERT INTO history (session_id, at, market_time, equity_usd, realized_pnl_usd, "
            "unrealized_pnl_usd, states) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                session_id,
                at,
                body.get("market_time"),
                body.get("equity_usd"),
                body.get("realized_pnl_usd"),
                body.get("unrealized_pnl_usd"),
                json.dumps(states, allow_nan=False),
            ),
        )
        newest = int(cur.lastrowid or 0)
        if newest % 100 == 0:  # prune now and then, not on every beat
            db.execute("DELETE FROM history WHERE id <= ?", (newest - keep,))

    def history(
        self, limit: int = 5000, session_id: int | None = None, after_id: int = 0
    ) -> list[dict[str, Any]]:
        """The newest `limit` history points (of one session, or of the latest that has
        points) with an id above `after_id`, oldest first."""
        with self._connect() as db:
            if session_id is None:
                row = db.execute("SELECT MAX(session_id) FROM history").fetchone()
                session_id = int(row[0]) if row and row[0] is not None else -1
            rows = db.execute(
                "SELECT id, at, market_time, equity_usd, realized_pnl_usd, unrealized_pnl_usd, "
                "states FROM history WHERE session_id=? AND id>? ORDER BY id DESC LIMIT ?",
                (session_id, after_id, limit),
            ).fetchall()
        keys = ("id", "at", "market_time", "equity_usd", "realized_pnl_usd", "unrealized_pnl_usd")
        points = []
        for r in reversed(rows):
            point = dict(zip(keys, r[:6], strict=True))
            point["states"] = json.loads(r[6])
            point["session_id"] = session_id
            points.append(point)
        return points

    def status(self) -> tuple[dict[str, Any], str, int] | None:
        """(the last snapshot, when it was written, its session) or None."""
        with self._connect() as db:
            row = db.execute("SELECT body, updated_at, session_id FROM status").fetchone()
        return (json.loads(row[0]), row[1], int(row[2])) if row else None

    # ---- order journal ----
    def journal_order(
        self,
        run_key: str,
        order_key: str,
        client_order_id: str,
        symbol: str,
        kind: str,
        side: int,
        touch_px: float,
        decided_ns: int,
        session_id: int,
    ) -> bool:
        """True: a new order; False: this run already sent it (a recovered replay)."""
        with self._connect() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_key,
                    order_key,
                    client_order_id,
                    symbol,
                    kind,
                    side,
                    touch_px,
                    decided_ns,
                    session_id,
                    _now(),
                ),
            )
            return cur.rowcount == 1

    def orders(self, run_key: str) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT order_key, client_order_id, symbol, kind, side, touch_px, decided_ns, "
                "session_id FROM orders WHERE run_key=? ORDER BY decided_ns, order_key",
                (run_key,),
            ).fetchall()
        keys = ("order_key", "client_order_id", "symbol", "kind", "side", "touch_px", "decided_ns")
        return [dict(zip((*keys, "session_id"), r, strict=True)) for r in rows]


def state_path(config: AppConfig) -> Path:
    """The node's state file: node.kill_db, default HMMTRADER_HOME/node/node.db."""
    return config.settings.node.kill_db or config.home / "node" / "node.db"


def open_state(config: AppConfig) -> NodeState:
    return NodeState(state_path(config), start_enabled=config.settings.node.start_enabled)

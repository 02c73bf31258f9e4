// hmm-trader dashboard: the node's status over a WebSocket (/ws), hand-drawn canvas charts,
// the kill switch (POST /kill, /enable with the ops token) and past run directories.
// No build step and no dependencies: served as is by serving/dashboard.py.
"use strict";

// one state colour scale everywhere: matplotlib's coolwarm, as the MLflow state plots
// (states are ordered by volatility: S0, the calmest, blue; the most volatile, red)
const COOLWARM = ["#3b4cc0", "#6282ea", "#8db0fe", "#b9d0f9", "#dddcdc", "#f5c4ac", "#f4987a",
  "#dd5f4b", "#b40426"];
function stateColor(state, k) {
  if (state == null || !Number.isFinite(state)) return "#30363d";
  const n = Math.max(2, k || 2);
  const at = Math.min(1, Math.max(0, state / (n - 1))) * (COOLWARM.length - 1);
  return COOLWARM[Math.round(at)];
}
const MAX_HISTORY_POINTS = 20000;
const SILENT_SOCKET_MS = 30000; // the server sends a keep-alive every ~10 s
const TOKEN_KEY = "hmmtrader.ops-token";

const $ = (selector) => document.querySelector(selector);
const live = { status: null, history: [], updates: 0 };
let runDetail = null;

// ---- formatting and DOM --------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function usd(value, digits = 2) {
  if (value == null || !Number.isFinite(value)) return "–";
  const text = Math.abs(value).toLocaleString("en-US",
    { minimumFractionDigits: digits, maximumFractionDigits: digits });
  return (value < 0 ? "-$" : "$") + text;
}

function num(value, digits = 2) {
  return value == null || !Number.isFinite(value) ? "–" : value.toFixed(digits);
}

function pct(value) {
  return value == null || !Number.isFinite(value) ? "–" : (value * 100).toFixed(1) + "%";
}

function parseTime(text) {
  if (text == null) return NaN;
  // "2025-01-01 00:30:00+00:00" (pandas) and ISO 8601 both; naive times are UTC
  let iso = String(text).replace(" ", "T");
  if (!/(Z|[+-]\d\d:?\d\d)$/.test(iso)) iso += "Z";
  return Date.parse(iso);
}

function utc(ms, withDate = false) {
  if (!Number.isFinite(ms)) return "–";
  const iso = new Date(ms).toISOString();
  return withDate ? iso.slice(0, 10) + " " + iso.slice(11, 19) : iso.slice(11, 19);
}

function setText(selector, text, cls) {
  const node = $(selector);
  node.textContent = text;
  if (cls !== undefined) node.className = cls;
}

// ---- charts: line/step series on a time axis, and bars ---------------------------------
const Chart = {
  PAD: { left: 72, right: 12, top: 20, bottom: 22 },

  // the canvas sized to its CSS box at devicePixelRatio; drawing is in CSS pixels
  setup(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(60, canvas.clientWidth), h = Math.max(40, canvas.clientHeight);
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    return { ctx, w, h };
  },

  niceTicks(lo, hi, count = 4) {
    const raw = (hi - lo) / count;
    let step = Math.pow(10, Math.floor(Math.log10(raw)));
    const ratio = raw / step;
    step *= ratio >= 7.5 ? 10 : ratio >= 3.5 ? 5 : ratio >= 1.5 ? 2 : 1;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(v);
    return { ticks, digits: Math.max(0, -Math.floor(Math.log10(step))) };
  },

  timeTicks(lo, hi, count = 5) {
    const steps = [1, 5, 15, 30, 60, 300, 900, 1800, 3600, 10800, 21600, 43200, 86400]
      .map((s) => s * 1000);
    const step = steps.find((s) => (hi - lo) / s <= count) || 86400000 * 7;
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) ticks.push(t);
    const label = (t) => {
      const iso = new Date(t).toISOString();
      const clock = step < 60000 ? iso.slice(11, 19) : iso.slice(11, 16);
      return hi - lo > 86400000 ? iso.slice(5, 10) + " " + clock : clock;
    };
    return ticks.map((t) => [t, label(t)]);
  },

  empty(canvas, ctx, w, h, text) {
    ctx.fillStyle = "#8b949e";
    ctx.textAlign = "center";
    ctx.fillText(text, w / 2, h / 2);
    canvas.dataset.points = "0";
  },

  // series: [{label, color, points: [[t_ms, y], ...], step}]; opts: yMin, yMax, yLabel(v, digits),
  // yTicks ([values]), xMin/xMax (ms), bands(ctx, x, y, plot) drawn under the lines
  line(canvas, series, opts = {}) {
    const { ctx, w, h } = this.setup(canvas);
    const drawn = series.filter((s) => s.points.length > 0);
    const n = Math.max(0, ...drawn.map((s) => s.points.length));
    if (n === 0) return this.empty(canvas, ctx, w, h, opts.emptyText || "no data yet");
    const xs = drawn.flatMap((s) => s.points.map((p) => p[0]));
    const ys = drawn.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
    let x0 = opts.xMin ?? Math.min(...xs), x1 = opts.xMax ?? Math.max(...xs);
    if (x1 === x0) { x0 -= 30000; x1 += 30000; }
    let y0 = opts.yMin ?? Math.min(...ys), y1 = opts.yMax ?? Math.max(...ys);
    if (!(y1 > y0)) { const pad = Math.abs(y0) * 0.001 || 1; y0 -= pad; y1 += pad; }
    const P = this.PAD, top = drawn.some((s) => s.label) ? P.top : 6;
    const plot = { l: P.left, r: w - P.right, t: top, b: h - P.bottom };
    const x = (t) => plot.l + ((t - x0) / (x1 - x0)) * (plot.r - plot.l);
    const y = (v) => plot.b - ((v - y0) / (y1 - y0)) * (plot.b - plot.t);

    if (opts.bands) opts.bands(ctx, x, y, plot);
    this.axes(ctx, plot, x, y, x0, x1, y0, y1, opts);
    for (const s of drawn) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = s.width || 1.5;
      ctx.beginPath();
      s.points.forEach(([t, v], i) => {
        if (!Number.isFinite(v)) return;
        if (i === 0) ctx.moveTo(x(t), y(v));
        else if (s.step) { ctx.lineTo(x(t), y(s.points[i - 1][1])); ctx.lineTo(x(t), y(v)); }
        else ctx.lineTo(x(t), y(v));
      });
      ctx.stroke();
    }
    if (opts.overlay) opts.overlay(ctx, x, y, plot);
    this.legend(ctx, plot, drawn);
    canvas.dataset.points = String(n);
  },

  axes(ctx, plot, x, y, x0, x1, y0, y1, opts) {
    ctx.strokeStyle = "#30363d";
    ctx.fillStyle = "#8b949e";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    const nice = this.niceTicks(y0, y1, opts.yCount || 4);
    const yTicks = opts.yTicks || nice.ticks;
    for (const v of yTicks) {
      ctx.beginPath(); ctx.moveTo(plot.l, y(v)); ctx.lineTo(plot.r, y(v)); ctx.stroke();
      const label = opts.yLabel ? opts.yLabel(v, nice.digits) : v.toFixed(nice.digits);
      ctx.fillText(label, plot.l - 6, y(v));
    }
    ctx.textAlign = "center";
    for (const [t, label] of this.timeTicks(x0, x1, Math.max(2, Math.floor((plot.r - plot.l) / 90)))) {
      ctx.beginPath(); ctx.moveTo(x(t), plot.b); ctx.lineTo(x(t), plot.b + 4); ctx.stroke();
      const half = ctx.measureText(label).width / 2; // the edge labels stay inside the canvas
      ctx.fillText(label, Math.min(Math.max(x(t), half + 1), plot.r + this.PAD.right - half - 1), plot.b + 12);
    }
    ctx.strokeRect(plot.l, plot.t, plot.r - plot.l, plot.b - plot.t);
  },

  legend(ctx, plot, series) {
    let at = plot.l;
    ctx.textAlign = "left";
    for (const s of series) {
      if (!s.label) continue;
      ctx.fillStyle = s.color;
      ctx.fillRect(at, 6, 10, 8);
      ctx.fillStyle = "#c9d1d9";
      ctx.fillText(s.label, at + 14, 10);
      at += 24 + ctx.measureText(s.label).width;
    }
  },

  // horizontal bars: items [{label, value, color}]; opts.max fixes the scale, opts.format
  bars(canvas, items, opts = {}) {
    const { ctx, w, h } = this.setup(canvas);
    if (items.length === 0) return this.empty(canvas, ctx, w, h, opts.emptyText || "none");
    const labelW = Math.min(w * 0.4, 8 + Math.max(...items.map((i) => ctx.measureText(i.label).width)));
    const valueW = 52, rowH = Math.min(24, (h - 4) / items.length);
    const max = opts.max ?? Math.max(1e-9, ...items.map((i) => i.value));
    items.forEach((item, row) => {
      const top = 2 + row * rowH, mid = top + rowH / 2;
      const barW = Math.max(0, (item.value / max) * (w - labelW - valueW));
      ctx.fillStyle = "#21262d";
      ctx.fillRect(labelW, top + 2, w - labelW - valueW, rowH - 4);
      ctx.fillStyle = item.color || "#4e9af1";
      ctx.fillRect(labelW, top + 2, barW, rowH - 4);
      ctx.fillStyle = item.strong ? "#ffffff" : "#c9d1d9";
      ctx.font = (item.strong ? "bold " : "") + "11px system-ui, sans-serif";
      ctx.textAlign = "right";
      ctx.fillText(item.label, labelW - 6, mid);
      ctx.textAlign = "left";
      ctx.fillText(opts.format ? opts.format(item.value) : String(item.value), w - valueW + 6, mid);
    });
    canvas.dataset.points = String(items.length);
  },
};

// a step chart of the regime state with a colored band per state segment
function drawTimeline(canvas, points, nStates, xRange = {}) {
  const k = Math.max(nStates || 0, 1 + Math.max(-1, ...points.map((p) => p[1])));
  Chart.line(canvas, [{ points, color: "#e6edf3", step: true, width: 1.2 }], {
    ...xRange, yMin: -0.5, yMax: k - 0.5,
    yTicks: Array.from({ length: k }, (_, i) => i),
    yLabel: (v) => "S" + v,
    emptyText: "no states yet",
    bands: stateBands(points, k, 0.35),
  });
}

// a chart's background: one band per run of the same state, in the state colour scale
function stateBands(points, k, alpha) {
  return (ctx, x, y, plot) => {
    ctx.globalAlpha = alpha;
    for (let i = 0; i < points.length;) {
      let j = i + 1; // one band per run of the same state (no seams between its points)
      while (j < points.length && points[j][1] === points[i][1]) j += 1;
      const start = x(points[i][0]), end = j < points.length ? x(points[j][0]) : plot.r;
      ctx.fillStyle = stateColor(points[i][1], k);
      ctx.fillRect(start, plot.t, Math.max(1, end - start), plot.b - plot.t);
      i = j;
    }
    ctx.globalAlpha = 1;
  };
}

// ---- live view ------------------------------------------------------------------------
function symbolsOf(status) {
  return status.symbols || Object.keys(status.regime || {});
}

function renderSwitch(sw) {
  const badge = $("#switch-status");
  badge.textContent = "";
  badge.append(el("strong", {}, sw.engaged ? "TRADING DISABLED · kill switch ENGAGED" : "TRADING ENABLED"),
    el("small", {}, sw.reason));
  badge.className = "badge " + (sw.engaged ? "engaged" : "enabled");
  badge.title = sw.reason;
  setText("#switch-detail",
    `${sw.engaged ? "engaged" : "released"} by ${sw.changed_by} at ${utc(parseTime(sw.changed_at), true)}` +
    (sw.engaged ? (sw.flatten ? " (flatten)" : " (no flatten)") : ""));
}

// a replay's warm-up: the data before its window, played to warm the features up; the node
// decides nothing that trades until `trading_from`
function warmingUp(status) {
  return Boolean(status.trading_from && status.market_time &&
    parseTime(status.market_time) < parseTime(status.trading_from));
}

function renderHeader(status) {
  const mode = $("#mode");
  mode.textContent = status.mode || "–";
  if (warmingUp(status)) {
    mode.append(" · ", el("span", { id: "warmup", class: "warn",
      title: "the data before the replay's window warms the features up; no orders" },
      `WARM-UP until ${utc(parseTime(status.trading_from))} (no orders)`));
  }
  setText("#symbols-list", symbolsOf(status).join(", ") || "–");
  const ml = status.ml_health;
  const model = $("#model");
  model.textContent = ml ? `v${ml.version ?? "?"} · ${ml.inference || "?"} · ` : "–";
  if (ml) {
    const health = ml.healthy ? "healthy" : ml.healthy === false ? "UNHEALTHY" : "health ?";
    model.append(el("span", { class: ml.healthy ? "ok" : "bad" }, health));
    if (ml.registry_anomaly) {
      model.append(" · ", el("span", { class: "bad", id: "registry-anomaly", title: ml.registry_anomaly },
        "PRODUCTION ALIAS MOVED OUT OF BAND"));
    }
  }
  setText("#market-time", status.market_time ? utc(parseTime(status.market_time), true) : "–");
  const node = status.node;
  const age = node.heartbeat_age_s == null ? "" : ` (heartbeat ${node.heartbeat_age_s.toFixed(1)} s ago)`;
  setText("#node-state", (node.running ? "running" : node.session == null ? "never ran"
    : node.ended_cleanly ? "stopped cleanly" : "NOT running") + age,
  node.running ? "ok" : node.ended_cleanly || node.session == null ? "muted" : "bad");
  setText("#equity", usd(status.equity_usd));
  setText("#pnl", `${usd(status.realized_pnl_usd)} / ${usd(status.unrealized_pnl_usd)}`);
  renderSwitch(status.kill_switch);
}

function symbolCard(symbol) {
  const id = `card-${symbol}`;
  let card = document.getElementById(id);
  if (card) return card;
  if (!document.querySelector("#symbols .card")) $("#symbols").textContent = "";
  card = el("div", { class: "card", id },
    el("h3", {}, symbol, " ", el("span", { class: "state-chip" }, "–")),
    el("dl", { class: "kv inline" },
      el("dt", {}, "confidence"), el("dd", { class: "confidence" }, "–"),
      el("dt", {}, "drift"), el("dd", { class: "drift" }, "–"),
      el("dt", {}, "action"), el("dd", { class: "action" }, "–"),
      el("dt", {}, "PnL r/u"), el("dd", { class: "sym-pnl" }, "–")),
    el("div", { class: "label" }, "posterior"),
    el("canvas", { id: `posterior-${symbol}`, class: "chart posterior" }),
    el("div", { class: "label" }, "state timeline"),
    el("canvas", { id: `timeline-${symbol}`, class: "chart timeline" }));
  $("#symbols").append(card);
  return card;
}

const ACTIONS = { "-1": "SELL", 0: "HOLD", 1: "BUY" };

function renderRegimes(status) {
  for (const symbol of symbolsOf(status)) {
    const card = symbolCard(symbol);
    const r = (status.regime || {})[symbol] || {};
    const chip = card.querySelector(".state-chip");
    chip.textContent = r.state == null ? "no state" : `state S${r.state}`;
    const k = (r.posterior || []).length;
    chip.style.background = stateColor(r.state, k);
    chip.style.color = "#0d1117";
    card.querySelector(".confidence").textContent = pct(r.confidence);
    card.querySelector(".drift").textContent = num(r.drift, 3);
    card.querySelector(".action").textContent = warmingUp(status) ? "warm-up"
      : r.action == null ? "–" : ACTIONS[r.action] ?? r.action;
    const realized = (status.realized_by_symbol || {})[symbol];
    const unrealized = (status.unrealized_by_symbol || {})[symbol];
    card.querySelector(".sym-pnl").textContent = `${usd(realized)} / ${usd(unrealized)}`;
    const posterior = r.posterior || [];
    Chart.bars(document.getElementById(`posterior-${symbol}`), posterior.map((p, i) => ({
      label: "S" + i, value: p, color: stateColor(i, posterior.length), strong: i === r.state,
    })), { max: 1, format: (v) => (v * 100).toFixed(1) + "%", emptyText: "no posterior yet" });
  }
}

function renderSide(status) {
  const blocks = Object.entries(status.blocks || {}).sort((a, b) => b[1] - a[1]);
  $("#chart-guardrails").style.height = `${Math.max(48, blocks.length * 24 + 6)}px`; // a row per reason
  Chart.bars($("#chart-guardrails"), blocks.map(([reason, count]) => ({
    label: reason, value: count, color: "#f2a93b",
  })), { emptyText: "no guardrail blocks" });
  const body = $("#positions tbody");
  body.textContent = "";
  for (const p of status.positions || []) {
    body.append(el("tr", {}, el("td", {}, p.symbol), el("td", { class: p.side === "LONG" ? "ok" : "bad" }, p.side || "–"),
      el("td", {}, num(p.qty, 4)), el("td", {}, num(p.avg_px, 2)), el("td", {}, usd(p.unrealized_pnl_usd))));
  }
  if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "none")));
  const orders = $("#open-orders tbody");
  orders.textContent = "";
  for (const o of status.open_orders || []) {
    orders.append(el("tr", {}, el("td", {}, o.client_order_id), el("td", {}, o.symbol || "–"),
      el("td", { class: o.side === "BUY" ? "ok" : "bad" }, o.side || "–"), el("td", {}, num(o.qty, 4)),
      el("td", {}, o.price == null ? "market" : num(o.price, 2))));
  }
  if (!orders.children.length) orders.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "none")));
  // the session's closed trades (newest first) and its realized PnL per day and per symbol
  const trades = $("#live-trades tbody");
  trades.textContent = "";
  for (const t of [...(status.recent_trades || [])].reverse()) {
    trades.append(el("tr", { "data-pnl": String(t.pnl_usd) }, el("td", {}, utc(parseTime(t.exit_time), true)),
      el("td", {}, t.symbol), el("td", { class: t.side === "LONG" ? "ok" : "bad" }, t.side),
      el("td", { class: t.pnl_usd >= 0 ? "ok" : "bad" }, usd(t.pnl_usd, 4))));
  }
  if (!trades.children.length) trades.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "none")));
  setText("#live-trade-count", status.closed_trades ? `(${status.closed_trades} this session; the newest 50)` : "(this session)");
  const pnl = $("#live-pnl tbody");
  pnl.textContent = "";
  for (const [by, values] of [["day", status.pnl_by_day], ["symbol", status.realized_by_symbol]]) {
    for (const [key, value] of Object.entries(values || {})) {
      pnl.append(el("tr", {}, el("td", { class: "muted" }, by), el("td", {}, key),
        el("td", { class: value >= 0 ? "ok" : "bad", "data-by": by, "data-value": String(value) }, usd(value))));
    }
  }
  if (!pnl.children.length) pnl.append(el("tr", {}, el("td", { colspan: 3, class: "muted" }, "none")));
  // what reconciliation found on the venue when the node started (after a restart)
  const found = status.found_at_start || {};
  const held = (found.positions || []).map((p) => `${p.symbol} ${p.side} ${num(p.qty, 5)} @ ${num(p.avg_px, 2)}`);
  const claimed = (found.open_orders || []).map((o) => o.client_order_id);
  const note = $("#found-at-start");
  note.hidden = !held.length && !claimed.length;
  note.textContent = note.hidden ? "" :
    `found on the venue at start: positions ${held.join(", ") || "none"}; open orders ${claimed.join(", ") || "none"}`;
  const ml = status.ml_health || {};
  const health = $("#ml-health");
  health.textContent = "";
  for (const [key, value] of [["version", ml.version], ["inference", ml.inference],
    ["healthy", ml.healthy], ["latency blocks", ml.latency_blocks], ["last error", ml.last_error],
    ["registry", ml.registry_anomaly],
    ["orders", status.orders], ["trader", status.trader_id]]) {
    health.append(el("dt", {}, key), el("dd", {}, value == null ? "–" : String(value)));
  }
  if (status.snapshot_errors && status.snapshot_errors.length) {
    health.append(el("dt", {}, "snapshot errors"), el("dd", { class: "bad" }, status.snapshot_errors.join("; ")));
  }
}

function historyTimes() {
  // market time when the node has one (replay runs faster than the wall clock), else wall time
  const useMarket = live.history.some((p) => p.market_time);
  return live.history
    .map((p) => [parseTime(useMarket ? p.market_time : p.at), p])
    .filter(([t]) => Number.isFinite(t));
}

function renderHistory() {
  const points = historyTimes();
  const series = (key) => points.filter(([, p]) => p[key] != null).map(([t, p]) => [t, p[key]]);
  Chart.line($("#chart-equity"), [{ label: "equity", color: "#4e9af1", points: series("equity_usd") }],
    { yLabel: (v, digits) => usd(v, digits), emptyText: "waiting for the node's equity" });
  Chart.line($("#chart-pnl"), [
    { label: "realized", color: "#3ecf8e", points: series("realized_pnl_usd") },
    { label: "unrealized", color: "#f2a93b", points: series("unrealized_pnl_usd") },
  ], { emptyText: "waiting for the node's PnL" });
  const status = live.status || {};
  for (const symbol of symbolsOf(status)) {
    const canvas = document.getElementById(`timeline-${symbol}`);
    if (!canvas) continue;
    const states = points.filter(([, p]) => p.states && p.states[symbol] && p.states[symbol].state != null)
      .map(([t, p]) => [t, p.states[symbol].state]);
    const k = (((status.regime || {})[symbol] || {}).posterior || []).length;
    // the same time axis as the equity chart (states start after the feature warm-up)
    drawTimeline(canvas, states, k, points.length ? { xMin: points[0][0], xMax: points[points.length - 1][0] } : {});
  }
}

// the pill says "live" only while the page is connected AND a node is running
function renderConnection() {
  const open = socket.ws && socket.ws.readyState === WebSocket.OPEN;
  if (!open) return; // connecting / disconnected: set by connect()
  const running = live.status && live.status.node && live.status.node.running;
  if (running) setText("#ws-state", "live", "pill ok");
  else setText("#ws-state", "connected · no node running", "pill wait");
}

function renderLive() {
  renderConnection();
  if (!live.status) return;
  renderHeader(live.status);
  renderRegimes(live.status);
  renderSide(live.status);
  renderHistory();
}

function onMessage(message) {
  live.updates += 1;
  setText("#ws-updates", String(live.updates));
  if (message.type === "snapshot") {
    live.history = message.history || [];
  } else if (message.points && message.points.length) {
    // every point the node wrote since the last push (it may beat faster than we push)
    for (const point of message.points) {
      const last = live.history[live.history.length - 1];
      if (last && last.session_id !== point.session_id) live.history = [];
      if (!last || point.id > last.id) live.history.push(point);
    }
    if (live.history.length > MAX_HISTORY_POINTS) live.history.splice(0, live.history.length - MAX_HISTORY_POINTS);
  }
  live.status = message.status;
  renderLive();
}

// ---- WebSocket with reconnect and backoff ---------------------------------------------
const socket = { ws: null, backoffMs: 1000, lastMessageAt: 0 };

function connect() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  setText("#ws-state", "connecting", "pill wait");
  const ws = new WebSocket(url);
  socket.ws = ws;
  ws.onopen = () => {
    socket.backoffMs = 1000;
    socket.lastMessageAt = Date.now();
    renderConnection();
  };
  ws.onmessage = (event) => {
    socket.lastMessageAt = Date.now();
    try {
      onMessage(JSON.parse(event.data));
    } catch (err) {
      console.warn("dashboard: bad message", err);
    }
  };
  ws.onclose = () => {
    if (socket.ws !== ws) return;
    const wait = socket.backoffMs;
    socket.backoffMs = Math.min(30000, socket.backoffMs * 2);
    setText("#ws-state", `disconnected: retry in ${Math.round(wait / 1000)} s`, "pill bad");
    setTimeout(connect, wait);
  };
}

setInterval(() => {
  // a socket that went silent (proxy, suspended laptop) is closed; onclose reconnects
  const ws = socket.ws;
  if (ws && ws.readyState === WebSocket.OPEN && Date.now() - socket.lastMessageAt > SILENT_SOCKET_MS) {
    ws.close();
  }
}, 5000);

// ---- kill switch ----------------------------------------------------------------------
async function postSwitch(path, body) {
  const token = $("#token").value.trim();
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const message = $("#switch-message");
  message.className = "wait";
  message.textContent = `POST ${path} ...`;
  try {
    const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
    const reply = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = typeof reply.detail === "string" ? reply.detail : JSON.stringify(reply.detail ?? reply);
      message.className = "bad";
      message.textContent = `${response.status}: ${detail}`;
      return;
    }
    message.className = "ok";
    message.textContent = `${response.status}: kill switch ${reply.engaged ? "ENGAGED" : "released"} ` +
      `by ${reply.changed_by} at ${utc(parseTime(reply.changed_at), true)}: ${reply.reason}`;
    renderSwitch(reply);
  } catch (err) {
    message.className = "bad";
    message.textContent = `request failed: ${err}`;
  }
}

function setupSwitch() {
  const token = $("#token");
  token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  token.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, token.value));
  $("#switch-panel").addEventListener("submit", (event) => event.preventDefault()); // Enter key
  $("#kill-button").addEventListener("click", () => {
    // no confirmation on purpose: in an emergency the click must be enough
    const reason = $("#reason").value.trim() || "kill button on the dashboard";
    postSwitch("/kill", { reason, flatten: $("#flatten").checked });
  });
  $("#enable-button").addEventListener("click", () => {
    const reason = $("#reason").value.trim();
    if (!reason) {
      setText("#switch-message", "enabling needs a reason (kept in the audit trail)", "bad");
      return;
    }
    postSwitch("/enable", { reason });
  });
}

// ---- past runs ------------------------------------------------------------------------
async function getJson(path) {
  const response = await fetch(path);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${body.detail || response.statusText}`);
  return body;
}

async function loadRuns() {
  const select = $("#run-select");
  let runs;
  try {
    runs = await getJson("/api/runs");
  } catch (err) {
    console.warn("dashboard: /api/runs", err);
    return;
  }
  const labels = runs.map((run) => [run.name, `${run.name} · ${run.mode || "?"} · ` +
    `v${run.model_version ?? "?"} · net ${usd(run.net_pnl_usd)} · ${run.trades ?? "?"} trades`]);
  const current = [...select.options].slice(1).map((o) => [o.value, o.textContent]);
  if (JSON.stringify(labels) === JSON.stringify(current)) return; // an open list stays open
  const chosen = select.value;
  select.length = 1;
  for (const [name, label] of labels) select.append(el("option", { value: name }, label));
  select.value = runs.some((r) => r.name === chosen) ? chosen : "";
}

function kpi(id, label, text, value) {
  return el("div", {}, el("dt", {}, label), el("dd", { id, "data-value": String(value ?? "") }, text));
}

function renderRun() {
  const run = runDetail;
  if (!run) return;
  const s = run.summary;
  $("#run-title").textContent = `${run.name}: ${s.mode || "backtest"}, model v${s.model_version ?? "?"}, ` +
    `${utc(parseTime(s.window_start), true)} → ${utc(parseTime(s.window_end), true)} UTC`;
  const kpis = $("#run-kpis");
  kpis.textContent = "";
  kpis.append(
    kpi("run-net-pnl", "net PnL", usd(s.net_pnl_usd), s.net_pnl_usd),
    kpi("run-trades", "trades", s.trades ?? "–", s.trades),
    kpi("run-hit-rate", "hit rate", pct(s.hit_rate), s.hit_rate),
    kpi("run-sharpe", "Sharpe", num(s.sharpe, 2), s.sharpe),
    kpi("run-max-drawdown", "max drawdown", usd(s.max_drawdown_usd), s.max_drawdown_usd),
    kpi("run-blocks", "guardrail blocks", s.guardrail_blocks_total ?? "–", s.guardrail_blocks_total));
  // a canary: the candidate (its equity) and production on the same window, overlaid
  const compared = Object.entries(run.compare || {}).map(([label, points], i) => ({
    label, color: ["#f0883e", "#a371f7"][i % 2], points: points.map(([t, v]) => [parseTime(t), v]) }));
  const main = compared.length ? `candidate v${s.model_version ?? "?"}` : "equity";
  Chart.line($("#run-equity"), [{ label: main, color: "#4e9af1",
    points: run.equity.map(([t, v]) => [parseTime(t), v]) }, ...compared],
    { yLabel: (v, digits) => usd(v, digits) });
  $("#run-equity").dataset.series = String(1 + compared.length);
  const link = $("#run-report");
  link.hidden = !run.report;
  if (run.report) link.href = run.report;
  renderRunPrices(run);
  const box = $("#run-timelines");
  for (const [symbol, states] of Object.entries(run.states)) {
    let canvas = document.getElementById(`run-timeline-${symbol}`);
    if (!canvas) {
      canvas = el("canvas", { id: `run-timeline-${symbol}`, class: "chart timeline" });
      box.append(el("h3", {}, `${symbol} state timeline`), canvas);
    }
    const k = Object.keys(s.state_occupancy || {}).length;
    drawTimeline(canvas, states.map(([t, v]) => [parseTime(t), v]), k);
  }
}

// the trader's screen of a run: each symbol's price with its regime as a background band and
// every trade marked (entry: a triangle, up for LONG, down for SHORT; exit: a dot)
function renderRunPrices(run) {
  const box = $("#run-prices");
  const k = Object.keys(run.summary.state_occupancy || {}).length;
  for (const [symbol, prices] of Object.entries(run.prices || {})) {
    let canvas = document.getElementById(`run-price-${symbol}`);
    if (!canvas) {
      canvas = el("canvas", { id: `run-price-${symbol}`, class: "chart price" });
      box.append(el("h3", {}, `${symbol} price, regime and trades`), canvas);
    }
    const points = prices.map(([t, v]) => [parseTime(t), v]);
    const states = (run.states[symbol] || []).map(([t, v]) => [parseTime(t), v]);
    const trades = run.trades.filter((t) => t.symbol === symbol);
    Chart.line(canvas, [{ label: `${symbol} mid`, color: "#e6edf3", points, width: 1.2 }], {
      yLabel: (v, digits) => v.toFixed(Math.max(digits, 2)),
      bands: stateBands(states, k, 0.28),
      overlay: (ctx, x, y) => {
        for (const t of trades) {
          const long = t.side === "LONG";
          const ex = x(parseTime(t.entry_time)), ey = y(t.entry_price);
          ctx.fillStyle = long ? "#3fb950" : "#f85149";
          ctx.beginPath();
          ctx.moveTo(ex, ey + (long ? -7 : 7));
          ctx.lineTo(ex - 5, ey + (long ? 2 : -2));
          ctx.lineTo(ex + 5, ey + (long ? 2 : -2));
          ctx.fill();
          ctx.fillStyle = t.pnl_usd >= 0 ? "#3fb950" : "#f85149";
          ctx.beginPath();
          ctx.arc(x(parseTime(t.exit_time)), y(t.exit_price), 3, 0, 2 * Math.PI);
          ctx.fill();
        }
      },
    });
    canvas.dataset.trades = String(trades.length);
  }
}

function renderRunTrades(run) {
  const table = $("#run-trade-list");
  table.textContent = "";
  table.append(el("thead", {}, el("tr", {}, ...["entry (UTC)", "exit (UTC)", "symbol", "side",
    "qty", "entry", "exit", "state", "net PnL"].map((h) => el("th", {}, h)))));
  const body = el("tbody");
  for (const t of [...run.trades].reverse()) { // newest first
    body.append(el("tr", { "data-entry": t.entry_time, "data-symbol": t.symbol,
      "data-pnl": String(t.pnl_usd) },
      el("td", {}, utc(parseTime(t.entry_time), true)), el("td", {}, utc(parseTime(t.exit_time), true)),
      el("td", {}, t.symbol), el("td", { class: t.side === "LONG" ? "ok" : "bad" }, t.side),
      el("td", {}, t.qty), el("td", {}, num(t.entry_price, 2)), el("td", {}, num(t.exit_price, 2)),
      el("td", {}, "S" + t.state), el("td", { class: t.pnl_usd >= 0 ? "ok" : "bad" }, usd(t.pnl_usd, 4))));
  }
  if (!run.trades.length) body.append(el("tr", {}, el("td", { class: "muted" }, "no trades")));
  table.append(body);
  setText("#run-trade-count", `${run.trades.length} trade(s)`);
}

function renderRunPnl(run) {
  for (const [by, id] of [["day", "#run-pnl-day"], ["symbol", "#run-pnl-symbol"], ["state", "#run-pnl-state"]]) {
    const table = $(id);
    table.textContent = "";
    table.append(el("thead", {}, el("tr", {}, el("th", {}, by), el("th", {}, "net PnL"))));
    const body = el("tbody");
    for (const [key, value] of Object.entries((run.pnl || {})[by] || {})) {
      body.append(el("tr", {}, el("td", {}, key),
        el("td", { class: value >= 0 ? "ok" : "bad", "data-key": key, "data-value": String(value) }, usd(value))));
    }
    table.append(body);
  }
}

function renderRunGuardrails(run) {
  const table = $("#run-guardrails");
  table.textContent = "";
  const symbols = [...new Set(Object.values(run.guardrails).flatMap((bySymbol) => Object.keys(bySymbol)))].sort();
  if (!symbols.length) {
    table.append(el("tbody", {}, el("tr", {}, el("td", { class: "muted" }, "no guardrail blocks"))));
    return;
  }
  table.append(el("thead", {}, el("tr", {}, el("th", {}, "reason"), ...symbols.map((s) => el("th", {}, s)))));
  const body = el("tbody");
  for (const [reason, bySymbol] of Object.entries(run.guardrails)) {
    body.append(el("tr", {}, el("td", {}, reason), ...symbols.map((s) => el("td", {}, bySymbol[s] ?? 0))));
  }
  table.append(body);
}

async function showRun(name) {
  const view = $("#run-view");
  if (!name) {
    view.hidden = true;
    runDetail = null;
    return;
  }
  try {
    runDetail = await getJson(`/api/runs/${encodeURIComponent(name)}`);
  } catch (err) {
    view.hidden = false;
    $("#run-title").textContent = `could not open ${name}: ${err.message}`;
    return;
  }
  $("#run-timelines").textContent = "";
  $("#run-prices").textContent = "";
  view.hidden = false; // before drawing: a hidden canvas has no size
  renderRun();
  renderRunGuardrails(runDetail);
  renderRunTrades(runDetail);
  renderRunPnl(runDetail);
}

// ---- start ----------------------------------------------------------------------------
function redrawAll() {
  renderLive();
  renderRun();
}

let resizeFrame = 0;
window.addEventListener("resize", () => {
  cancelAnimationFrame(resizeFrame);
  resizeFrame = requestAnimationFrame(redrawAll);
});

document.addEventListener("DOMContentLoaded", () => {
  setupSwitch();
  $("#run-select").addEventListener("change", (event) => showRun(event.target.value));
  loadRuns();
  setInterval(loadRuns, 10000);
  renderHistory();
  connect();
});

"""Metric and label names in the PromQL of the Grafana dashboard and the alert rules.

`promql_metric_names_and_labels(expr)` is a small tokenizer, not a PromQL parser: enough to
check that every metric the dashboard and the alerts name is exported, with those labels.
Names that are not exported by hmm-trader code: `up` (Prometheus adds it per target, see
PROMETHEUS_SERIES) and the target labels `job`/`instance` (TARGET_LABELS). Histogram
series `X_bucket`/`X_sum`/`X_count` count as `X`, and `le` (the bucket bound) is reported
with it: it is the histogram's own label, not one the code declares.
Labels in `on(...)`, `ignoring(...)`, `group_left(...)`, `group_right(...)` are not
attributed to any metric (they name labels of both operands).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_JSON = ROOT / "deploy" / "grafana" / "dashboards" / "hmmtrader.json"
ALERTS_YML = ROOT / "deploy" / "prometheus" / "alerts.yml"

PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
TARGET_LABELS = frozenset({"job", "instance"})
HISTOGRAM_LABEL = "le"

AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)[a-zA-Z0-9_]*")
_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|[A-Za-z0-9_]+)")
_MATCHER = re.compile(
    r"""\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)"""
)
_OPERATORS = ("==", "!=", ">=", "<=", "=~", "!~")


class PromQLSyntaxError(ValueError):
    """The expression does not tokenize (unbalanced brackets or quotes)."""


Token = tuple[str, str]  # (kind, text); kinds: ident, matchers, range, string, op, paren


def _scan_until(expr: str, start: int, closer: str) -> int:
    """Index just after the `closer` that ends the bracket opened at expr[start]."""
    i = start + 1
    while i < len(expr):
        if expr[i] in "\"'`":
            i = _string_end(expr, i)
        elif expr[i] == closer:
            return i + 1
        else:
            i += 1
    raise PromQLSyntaxError(f"no {closer!r} for position {start} in {expr!r}")


def tokenize(expr: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(expr):
        char = expr[i]
        if char.isspace():
            i += 1
        elif char == "#":
            newline = expr.find("\n", i)
            i = len(expr) if newline == -1 else newline
        elif char in "\"'`":
            end = _string_end(expr, i)
            tokens.append(("string", expr[i:end]))
            i = end
        elif char == "{":
            end = _scan_until(expr, i, "}")
            tokens.append(("matchers", expr[i + 1 : end - 1]))
            i = end
        elif char == "[":
            end = _scan_until(expr, i, "]")
            tokens.append(("range", expr[i + 1 : end - 1]))
            i = end
        elif char == "$":
            match = _VARIABLE.match(expr, i)
            if match is None:
                raise PromQLSyntaxError(f"stray '$' at {i} in {expr!r}")
            tokens.append(("variable", match.group()))
            i = match.end()
        elif char in "()":
            tokens.append(("paren", char))
            i += 1
        elif (number := _NUMBER.match(expr, i)) and (char.isdigit() or char == "."):
            tokens.append(("number", number.group()))
            i = number.end()
        elif ident := _IDENT.match(expr, i):
            tokens.append(("ident", ident.group()))
            i = ident.end()
        else:
            width = 2 if expr[i : i + 2] in _OPERATORS else 1
            tokens.append(("op", expr[i : i + width]))
            i += width
    return tokens


def _string_end(expr: str, start: int) -> int:
    quote = expr[start]
    i = start + 1
    while i < len(expr):
        if expr[i] == "\\" and quote != "`":
            i += 2
            continue
        if expr[i] == quote:
            return i + 1
        i += 1
    raise PromQLSyntaxError(f"unterminated string in {expr!r}")


def _matching_paren(tokens: list[Token], open_index: int) -> int:
    depth = 0
    for index in range(open_index, len(tokens)):
        if tokens[index] == ("paren", "("):
            depth += 1
        elif tokens[index] == ("paren", ")"):
            depth -= 1
            if depth == 0:
                return index
    raise PromQLSyntaxError("unbalanced parentheses")


def _label_list(tokens: list[Token], open_index: int) -> tuple[set[str], int]:
    """Labels in the `( a, b )` starting at open_index, and the index of its `)`."""
    close = _matching_paren(tokens, open_index)
    names = {text for kind, text in tokens[open_index + 1 : close] if kind == "ident"}
    return names, close


def base_metric_name(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _label_positions(tokens: list[Token]) -> tuple[list[bool], list[tuple[int, int, str]]]:
    """Which tokens are label names in by/without/on/ignoring/group_* lists or the label
    argument of label_values(), and each label_values(metric, label) call as
    (its `(`, its last comma, label)."""
    in_label_list = [False] * len(tokens)
    label_values_calls: list[tuple[int, int, str]] = []
    for index, (kind, text) in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if kind != "ident" or following != ("paren", "("):
            continue
        close = _matching_paren(tokens, index + 1)
        if text.lower() in LABEL_LIST_KEYWORDS:
            for inner in range(index + 1, close + 1):
                in_label_list[inner] = True
        elif text == "label_values":
            # Grafana: label_values(label) or label_values(metric{...}, label)
            commas = [i for i in range(index + 2, close) if tokens[i] == ("op", ",")]
            last_comma = commas[-1] if commas else index + 1
            for inner in range(last_comma + 1, close):
                in_label_list[inner] = True
            label = tokens[last_comma + 1][1] if last_comma + 1 < close else ""
            if commas and label:
                label_values_calls.append((index + 1, last_comma, label))
    return in_label_list, label_values_calls


def promql_metric_names_and_labels(expr: str) -> dict[str, set[str]]:
    """Metric name -> label names used with it (matchers, by/without of its aggregation).

    Also understands Grafana's `label_values(metric, label)` and its `$variables`.
    """
    tokens = tokenize(expr)
    in_label_list, label_values_calls = _label_positions(tokens)
    is_metric = [False] * len(tokens)
    result: dict[str, set[str]] = {}
    metric_at: dict[int, str] = {}
    for index, (kind, text) in enumerate(tokens):
        if kind != "ident" or in_label_list[index]:
            continue
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        lowered = text.lower()
        if following == ("paren", "(") or lowered in KEYWORDS:
            continue  # a function call or an operator keyword
        if lowered in AGGREGATIONS or lowered in LABEL_LIST_KEYWORDS:
            continue
        name = base_metric_name(text)
        is_metric[index] = True
        metric_at[index] = name
        labels = result.setdefault(name, set())
        if name != text and text.endswith("_bucket"):
            labels.add(HISTOGRAM_LABEL)
        if following is not None and following[0] == "matchers":
            labels.update(_matcher_labels(following[1]))

    for index, (kind, text) in enumerate(tokens):
        # selectors without a metric name: {__name__="x", a="b"}
        if kind == "matchers" and not (index > 0 and is_metric[index - 1]):
            found = dict((m.group(1), m.group(3)[1:-1]) for m in _MATCHER.finditer(text))
            metric = found.get("__name__", "")
            if _IDENT.fullmatch(metric):
                labels = result.setdefault(base_metric_name(metric), set())
                labels.update(_matcher_labels(text))
                if metric.endswith("_bucket"):
                    labels.add(HISTOGRAM_LABEL)

    _attribute_aggregation_labels(tokens, metric_at, result)
    for open_index, last_comma, label in label_values_calls:
        for name in _metrics_between(metric_at, open_index, last_comma):
            result[name].add(label)
    return result


def _matcher_labels(matchers: str) -> set[str]:
    return {m.group(1) for m in _MATCHER.finditer(matchers)} - {"__name__"}


def _metrics_between(metric_at: dict[int, str], start: int, end: int) -> set[str]:
    return {name for index, name in metric_at.items() if start < index < end}


def _attribute_aggregation_labels(
    tokens: list[Token], metric_at: dict[int, str], result: dict[str, set[str]]
) -> None:
    """`sum by (a) (body)` and `sum (body) by (a)`: a goes to every metric in body."""
    for index, (kind, text) in enumerate(tokens):
        if kind != "ident" or text.lower() not in AGGREGATIONS:
            continue
        labels: set[str] = set()
        cursor = index + 1
        if cursor < len(tokens) and tokens[cursor][1].lower() in ("by", "without"):
            labels, cursor = _label_list(tokens, cursor + 1)
            cursor += 1
        if cursor >= len(tokens) or tokens[cursor] != ("paren", "("):
            continue  # an identifier that only looks like an aggregation
        body_end = _matching_paren(tokens, cursor)
        after = body_end + 1
        if not labels and after < len(tokens) and tokens[after][1].lower() in ("by", "without"):
            labels, _ = _label_list(tokens, after + 1)
        for name in _metrics_between(metric_at, cursor, body_end):
            result[name].update(labels)


def _dashboard_exprs(node: object) -> Iterator[str]:
    """Every target `expr` and template variable query, panels in rows included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            elif key == "templating" and isinstance(value, dict):
                for variable in value.get("list", []):
                    if variable.get("type") != "query":
                        continue
                    query = variable.get("query")
                    text = query.get("query") if isinstance(query, dict) else query
                    if isinstance(text, str) and text.strip():
                        yield text
            else:
                yield from _dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dashboard_exprs(item)


def alert_rules(path: Path = ALERTS_YML) -> list[dict]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def all_dashboard_and_alert_exprs(
    dashboard: Path = DASHBOARD_JSON, alerts: Path = ALERTS_YML
) -> list[str]:
    """The PromQL of the Grafana dashboard (targets, variable queries) and the alert rules."""
    exprs = list(_dashboard_exprs(json.loads(dashboard.read_text())))
    exprs += [str(rule["expr"]) for rule in alert_rules(alerts)]
    return exprs

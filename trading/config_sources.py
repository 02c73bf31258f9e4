"""Where configuration values come from, checked before and after pydantic reads them: the
YAML files (a duplicate key is refused) and the HMMTRADER_* variables of the environment
and .env (an unknown name is refused). Errors name the file or the variable, and never
echo the value of an unknown variable or of anything that looks like a secret."""

from __future__ import annotations

import difflib
import json
import os
import re
import types
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, DotEnvSettingsSource
from pydantic_settings.exceptions import SettingsError

from trading.errors import ConfigError

ENV_PREFIX = "HMMTRADER_"
# HMMTRADER_* variables that are not settings, read from the environment by:
NON_SETTINGS_VARIABLES = {
    "HMMTRADER_CONFIG_DIR": "load_settings (another configs folder)",
    "HMMTRADER_NODE_LOG_LEVEL": "trading/node/build.py (NautilusTrader's log level)",
    "HMMTRADER_TEST_SHARED": "tests/shared.py (the test session's shared directory)",
}
# words of a key that may hold a credential (URLs and URIs can carry a password)
_SECRET_WORDS = frozenset(
    {"token", "secret", "password", "passwd", "key", "credential", "credentials", "auth"}
    | {"uri", "url", "dsn"}
)
_JSON_HINT = (
    "a section, list or mapping is written as JSON, e.g. "
    "HMMTRADER_STRATEGY__SYMBOLS='[\"BTCUSDT\"]', or one key at a time, e.g. "
    "HMMTRADER_SERVING__PORT=8011"
)


# ---- YAML ---------------------------------------------------------------------------------
def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML config file as a dict; ConfigError when it is missing, malformed, not a
    mapping, or holds a key twice in one mapping (YAML would keep the last silently)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    try:
        _refuse_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _refuse_duplicate_keys(
    node: yaml.Node | None, path: Path, keys: tuple[str, ...] = (), seen: set[int] | None = None
) -> None:
    seen = set() if seen is None else seen
    if node is None or id(node) in seen:  # an alias points at a node checked already
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(item, path, (*keys, str(i)), seen)
    elif isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            child = keys
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                ident = (key_node.tag, key_node.value)
                child = (*keys, key_node.value)
                if ident in first_line:
                    raise ConfigError(
                        f"{path}: line {line}: duplicate key {'.'.join(child)} (first on line "
                        f"{first_line[ident]}); YAML would keep only the last one: remove one"
                    )
                first_line[ident] = line
            _refuse_duplicate_keys(value_node, path, child, seen)


# ---- HMMTRADER_* variables ---------------------------------------------------------------
@dataclass(frozen=True)
class Variable:
    """One HMMTRADER_* variable as pydantic-settings will read it."""

    name: str  # as written (the settings read names case-insensitively)
    value: str | None
    source: Literal["environment", ".env"]
    dotenv: Path | None = None

    @property
    def key(self) -> str:
        return self.name.upper()

    @property
    def where(self) -> str:
        if self.source == "environment":
            return f"environment variable {self.name}"
        return f"variable {self.name} in {self.dotenv}"


def read_variables(settings_cls: type[BaseSettings]) -> list[Variable]:
    """The HMMTRADER_* variables of the environment, then of the .env file the settings
    read (the order in which they take precedence)."""
    found = [
        Variable(name, value, "environment")
        for name, value in os.environ.items()
        if name.upper().startswith(ENV_PREFIX)
    ]
    env_file = settings_cls.model_config.get("env_file")
    if isinstance(env_file, str | Path):
        dotenv = Path(env_file).absolute()
        source = DotEnvSettingsSource(settings_cls, case_sensitive=True)
        found += [
            Variable(name, value, ".env", dotenv)
            for name, value in source.env_vars.items()
            if name.upper().startswith(ENV_PREFIX)
        ]
    return found


def check_variable_names(variables: Iterable[Variable], settings_cls: type[BaseModel]) -> None:
    """Refuse HMMTRADER_* variables that are not settings (pydantic-settings would ignore a
    misspelled section silently), by name and with the likely intended one; never the
    value, which may be a secret."""
    known = sorted(_setting_names(settings_cls, ENV_PREFIX))
    problems: dict[str, list[str]] = {}
    for var in variables:
        if var.key in NON_SETTINGS_VARIABLES:
            if var.source == "environment":
                continue
            problem = f"{var.name} (read from the environment only, not from .env)"
        elif _is_setting(var.key.removeprefix(ENV_PREFIX).split("__"), settings_cls):
            continue
        else:
            close = _closest(var.key, [*known, *NON_SETTINGS_VARIABLES])
            problem = var.name + (f" (did you mean {close}?)" if close else "")
        where = "the environment" if var.source == "environment" else str(var.dotenv)
        problems.setdefault(where, []).append(problem)
    if problems:
        listed = "; ".join(f"in {where}: {', '.join(names)}" for where, names in problems.items())
        raise ConfigError(
            f"unknown HMMTRADER_* variable {listed}. A setting is HMMTRADER_<SECTION>__<KEY> "
            "(nested keys joined by '__', see configs/settings.yaml); rename or remove it"
        )


def _closest(name: str, known: Sequence[str]) -> str | None:
    """The setting a misspelled name most likely means (compared without the prefix)."""
    short = {k.removeprefix(ENV_PREFIX): k for k in known}
    close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), list(short), n=1, cutoff=0.75)
    return short[close[0]] if close else None


def _section_of(annotation: Any) -> Any:
    """`X | None` -> X."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in annotation.__args__ if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_setting(parts: Sequence[str], model: type[BaseModel]) -> bool:
    fields = {name.upper(): info for name, info in model.model_fields.items()}
    info = fields.get(parts[0])
    if info is None:
        return False
    if len(parts) == 1:
        return True
    inner = _section_of(info.annotation)
    if _is_model(inner):
        return _is_setting(parts[1:], inner)
    # the keys of a mapping (strategy.per_symbol.BTCUSDT) are data; pydantic checks the rest
    return get_origin(inner) in (dict, list) and all(parts[1:])


def _setting_names(model: type[BaseModel], prefix: str) -> Iterator[str]:
    for name, info in model.model_fields.items():
        full = prefix + name.upper()
        yield full
        inner = _section_of(info.annotation)
        if _is_model(inner):
            yield from _setting_names(inner, full + "__")


# ---- errors -------------------------------------------------------------------------------
def describe_validation_error(
    exc: ValidationError, path: Path, variables: Sequence[Variable] = ()
) -> str:
    """One line per error: where the value came from (the variable, else the file), the
    key, the reason and, unless it may be a secret, the value."""
    parts = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "(top level)"
        message = err["msg"]
        if err["type"] == "finite_number":
            message += " (inf and nan are refused: a limit cannot be switched off that way)"
        parts.append(f"{_where(loc, path, variables)}: {key}: {message}{_shown_input(err, loc)}")
    return "; ".join(parts)


def describe_source_error(exc: SettingsError, variables: Sequence[Variable]) -> str:
    """pydantic-settings could not parse a variable (JSON of a section or a list): name
    the variable, never its value."""
    match = re.search(r'field "([^"]+)" from source "(\w+)"', str(exc))
    decode = _json_decode_error(exc)
    candidates = list(variables)
    if match:
        source = ".env" if "DotEnv" in match.group(2) else "environment"
        section = ENV_PREFIX + match.group(1).upper()
        candidates = [
            v
            for v in variables
            if v.source == source and (v.key == section or v.key.startswith(section + "__"))
        ]
    exact = [v for v in candidates if decode is not None and v.value == decode.doc]
    named = exact[:1] or candidates
    what = " or ".join(v.where for v in named) or "an HMMTRADER_* variable"
    if decode is not None:
        reason = f"not valid JSON ({decode.msg} at column {decode.colno})"
    else:
        reason = "cannot be parsed"
    return f"{what}: {reason}; {_JSON_HINT}"


def _json_decode_error(exc: BaseException) -> json.JSONDecodeError | None:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, json.JSONDecodeError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _where(loc: tuple[str, ...], path: Path, variables: Sequence[Variable]) -> str:
    origin = _origin(loc, variables)
    if origin is not None:
        return origin.where
    # a check across keys (a model validator): the file and the variables that took part
    below = ENV_PREFIX + "__".join(loc).upper() + "__"
    related = [v.where for v in variables if loc and v.key.startswith(below)]
    return " and ".join([str(path), *related])


def _origin(loc: tuple[str, ...], variables: Sequence[Variable]) -> Variable | None:
    """The variable the value at `loc` (a, b, c) came from: HMMTRADER_<A>__<B>__<C>
    itself, or a JSON value of HMMTRADER_<A>__<B> or HMMTRADER_<A> that holds the rest.
    The environment wins over .env."""
    for source in ("environment", ".env"):
        by_key = {v.key: v for v in variables if v.source == source}
        for i in range(len(loc), 0, -1):
            var = by_key.get(ENV_PREFIX + "__".join(loc[:i]).upper())
            if var is not None and (i == len(loc) or _json_holds(var.value, loc[i:])):
                return var
    return None


def _json_holds(text: str | None, loc: tuple[str, ...]) -> bool:
    try:
        node: Any = json.loads(text or "")
    except ValueError:
        return False
    for part in loc:
        if isinstance(node, dict):
            keys = {str(k).lower(): k for k in node}
            if part.lower() not in keys:
                return False
            node = node[keys[part.lower()]]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _shown_input(err: Any, loc: tuple[str, ...]) -> str:
    """' (got 9)', or nothing for an unknown key (maybe a misspelled secret), a secret-ish
    key, or a whole section."""
    if err["type"] == "extra_forbidden" or "input" not in err:
        return ""
    if isinstance(err["input"], dict) or _secretish(loc):
        return ""
    return f" (got {err['input']!r})"


def _secretish(loc: tuple[str, ...]) -> bool:
    return any(word in _SECRET_WORDS for part in loc for word in part.lower().split("_"))

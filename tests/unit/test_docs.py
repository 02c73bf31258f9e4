"""The user's guide stays true to the repository: every repository path the README and
docs/ name exists, every relative link resolves, and every `hmmtrader ...` command they
show names a real command with real options."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from hmmtrader.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# a path in backticks is checked when it starts with one of these (the repository's own
# top-level entries, and names that used to be there); other paths (var/..., a user's
# /tmp/..., a state root's lake/...) are the user's, not the repository's
TOP_LEVEL = {p.name for p in ROOT.iterdir() if not p.name.startswith(".git")} | {
    ".ci",
    "DESIGN.md",
    "benchmarks",
}
GLOBAL_OPTIONS = {"--home": 1, "--config-dir": 1, "--debug": 0}


def _code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def _fenced_lines(text: str) -> list[str]:
    lines, inside = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line.strip())
    return lines


def _repo_path(token: str) -> str | None:
    token = token.strip().rstrip(".,:;")
    if " " in token or any(c in token for c in "<>*${}|") or "://" in token:
        return None
    first = token.split("/")[0]
    return token if (first in TOP_LEVEL and first != token) or token in TOP_LEVEL else None


def test_docs_exist() -> None:
    assert (ROOT / "README.md").is_file() and len(DOCS) > 1


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_paths_exist(doc: Path) -> None:
    text = doc.read_text()
    missing = [
        path
        for token in _code_spans(text)
        if (path := _repo_path(token)) is not None and not (ROOT / path).exists()
    ]
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    broken = [
        link
        for link in links
        if "://" not in link and not link.startswith("mailto:")
        and not (doc.parent / link).exists()
    ]  # fmt: skip
    assert not missing, f"{doc.name} names paths the repository does not hold: {missing}"
    assert not broken, f"{doc.name} links to nothing: {broken}"


def _commands(doc: Path) -> list[str]:
    text = doc.read_text()
    found = []
    program = re.compile(r"^(?:\$\s+)?(?:[A-Z_]+=\S*\s+)*(?:\S*/)?hmmtrader(\s.*)?$")
    for line in [*_fenced_lines(text), *_code_spans(text)]:
        match = program.match(line.strip())
        if match and match.group(1):
            found.append(match.group(1).split(" #")[0])
    return found


def _words(command: str) -> list[str]:
    """Shell words of a documented command, with [optional] brackets and a|b choices
    flattened: `[--market spot|um]` gives --market and spot|um."""
    cleaned = command.replace("\\|", "|").replace("[", " ").replace("]", " ").replace("...", " ")
    try:
        return shlex.split(cleaned)
    except ValueError:
        return cleaned.split()


def _is_group(command: Any) -> bool:
    return hasattr(command, "get_command")  # typer's groups (it vendors click)


def check_command(root: Any, command: str) -> str | None:
    """What is wrong with a documented command line, or None."""
    words = _words(command)
    current = root
    i = 0
    while i < len(words):
        word = words[i]
        if current is root and word in GLOBAL_OPTIONS:
            i += 1 + GLOBAL_OPTIONS[word]
            continue
        if _is_group(current) and not word.startswith("-"):
            sub = current.get_command(None, word)
            if sub is None:
                if current is root:
                    return f"no command {word!r}"
                return f"{current.name} has no subcommand {word!r}"
            current = sub
            i += 1
            continue
        break
    known = {opt for param in current.params for opt in (*param.opts, *param.secondary_opts)}
    known.add("--help")
    for word in words[i:]:
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            if name not in known:
                return f"{current.name} has no option {name}"
    return None


def test_documented_commands_exist() -> None:
    root = typer.main.get_command(app)
    assert _is_group(root)
    problems, seen = [], 0
    for doc in DOCS:
        for command in _commands(doc):
            seen += 1
            problem = check_command(root, command)
            if problem:
                problems.append(f"{doc.name}: hmmtrader{command}: {problem}")
    assert seen > 30, seen  # the guide shows its commands
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_wrong_command() -> None:
    root = typer.main.get_command(app)
    assert check_command(root, " --home x backtest --start 2024-01-01 --end 2024-01-02") is None
    assert check_command(root, " ingest archive [--market spot\\|um]") is None
    assert check_command(root, " bench nope") == "bench has no subcommand 'nope'"
    assert check_command(root, " backtest --when 2024") == "backtest has no option --when"
    assert check_command(root, " frobnicate") == "no command 'frobnicate'"
    assert _repo_path("trading/node/runner.py") == "trading/node/runner.py"
    assert _repo_path("DESIGN.md") == "DESIGN.md" and _repo_path("var/lake/x") is None

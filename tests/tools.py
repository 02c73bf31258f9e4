"""Debian tools some tests need (promtool, prometheus, systemd-analyze, chromium)."""

from __future__ import annotations

import os

import pytest


def missing_tool(what: str, install: str) -> None:
    """Fail in CI (CI=true), skip elsewhere: a check that cannot run never passes silently."""
    reason = f"{what} is not installed; install it with: {install}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)

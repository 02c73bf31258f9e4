"""Pages opened from file:// in Debian's Chromium with every network request refused (a
run's report.html, the Data Docs): what they draw and show, and what they tried to load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.tools import missing_tool

CHROMIUM = Path("/usr/bin/chromium")


def open_offline(
    path: Path, script: str, *, wait_for: str | None = None, screenshot: Path | None = None
) -> tuple[Any, list[str], list[str]]:
    """(what `script` returns on the page, the remote URLs it tried, its console errors)."""
    if not CHROMIUM.exists():
        missing_tool(f"{CHROMIUM} (offline page checks)", "apt-get install chromium")
    from playwright.sync_api import sync_playwright

    remote: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        context = browser.new_context(viewport={"width": 1400, "height": 900})

        def route(r: Any) -> Any:
            if r.request.url.startswith("file://"):
                return r.continue_()
            remote.append(r.request.url)
            return r.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.goto(path.as_uri())
        if wait_for is not None:
            page.wait_for_selector(wait_for)
        found = page.evaluate(script)
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return found, remote, errors


_REPORT = """() => ({
  lines: [...document.querySelectorAll('polyline')].map(p => [p.dataset.series,
    Number(p.dataset.points), p.getBoundingClientRect().width]),
  bars: document.querySelectorAll('rect[data-label]').length,
  values: [...document.querySelectorAll('[data-key][data-value]')].map(
    e => [e.dataset.key, e.dataset.value, e.textContent.trim()]),
})"""


def open_report(path: Path, screenshot: Path | None = None) -> dict[str, Any]:
    """{"lines": {series: (points, width px)}, "bars": n, "values": {data-key: value},
    "shown": {data-key: text}, "remote": [urls tried], "errors": [console errors]}."""
    found, remote, errors = open_offline(path, _REPORT, screenshot=screenshot)
    return {
        "lines": {name: (points, width) for name, points, width in found["lines"]},
        "bars": found["bars"],
        "values": {key: json.loads(value) for key, value, _ in found["values"]},
        "shown": {key: text for key, _, text in found["values"]},
        "remote": remote,
        "errors": errors,
    }

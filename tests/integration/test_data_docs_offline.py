"""Data Docs render offline: the shared trained world's site (built and localized by the
gate that validated its days) opened from file:// in Debian's Chromium with every network
request refused: styled by the local Bootstrap, and the index lists every validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.worlds import trained_world
from tests.tools import missing_tool
from trading.quality import data_docs_index
from trading.quality.offline import VENDOR, cdn_links

pytestmark = [pytest.mark.integration]

CHROMIUM = Path("/usr/bin/chromium")


def test_data_docs_index_is_styled_and_lists_the_validations_offline(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        missing_tool(f"{CHROMIUM} (the Data Docs browser test)", "apt-get install chromium")
    from playwright.sync_api import sync_playwright

    index = data_docs_index(trained_world() / "quality")
    site = index.parent
    assert (site / VENDOR / "bootstrap" / "bootstrap.min.css").is_file()
    assert cdn_links(site) == []  # no page loads anything remote
    validations = sorted(site.glob("validations/**/*.html"))
    assert len(validations) >= 4  # quotes and trades of two days, features of one

    remote: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        context = browser.new_context(viewport={"width": 1400, "height": 900})

        def route(r):  # type: ignore[no-untyped-def]
            if r.request.url.startswith("file://"):
                return r.continue_()
            remote.append(r.request.url)
            return r.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.goto(index.as_uri())
        # bootstrap-table fills the validations table from the page's data
        page.wait_for_selector("#Validation-Results .bootstrap-table tbody tr")
        rows = page.eval_on_selector_all(
            "#Validation-Results .bootstrap-table tbody tr", "rows => rows.map(r => r.innerText)"
        )
        styled = page.evaluate(
            "() => ({margin: getComputedStyle(document.body).margin,"
            " collapse: getComputedStyle(document.querySelector('table')).borderCollapse,"
            " sheets: [...document.styleSheets].map(s => s.href || '')"
            "   .filter(h => h.includes('/static/vendor/'))})"
        )
        page.screenshot(path=str(tmp_path / "data-docs-index.png"), full_page=True)
        browser.close()
    assert remote == [], remote  # nothing was even tried
    assert errors == [], errors
    # Bootstrap's reboot applies (not the browser's 8 px margin and separate borders)
    assert (styled["margin"], styled["collapse"]) == ("0px", "collapse"), styled
    assert any(h.endswith("bootstrap/bootstrap.min.css") for h in styled["sheets"]), styled
    # one row per validation run, each naming its suite
    assert len(rows) == len(validations), rows
    assert all(any(s in r for s in ("raw_quotes", "raw_trades", "features_v1")) for r in rows)

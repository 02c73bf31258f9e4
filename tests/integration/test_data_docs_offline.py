"""Data Docs render offline: the shared trained world's site (built and localized by the
gate that validated its days) opened from file:// in Debian's Chromium with every network
request refused: styled by the local Bootstrap, and the index lists every validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.report_check import open_offline
from tests.integration.worlds import trained_world
from trading.quality import data_docs_index
from trading.quality.offline import VENDOR, cdn_links

pytestmark = [pytest.mark.integration]

ROWS = "#Validation-Results .bootstrap-table tbody tr"  # bootstrap-table fills it from the page
_PAGE = f"""() => ({{
  rows: [...document.querySelectorAll("{ROWS}")].map(r => r.innerText),
  margin: getComputedStyle(document.body).margin,
  collapse: getComputedStyle(document.querySelector('table')).borderCollapse,
  sheets: [...document.styleSheets].map(s => s.href || '').filter(h => h.includes('/{VENDOR}/')),
}})"""


def test_data_docs_index_is_styled_and_lists_the_validations_offline(tmp_path: Path) -> None:
    index = data_docs_index(trained_world() / "quality")
    site = index.parent
    assert (site / VENDOR / "bootstrap" / "bootstrap.min.css").is_file()
    assert cdn_links(site) == []  # no page loads anything remote
    validations = sorted(site.glob("validations/**/*.html"))
    assert len(validations) >= 4  # quotes and trades of two days

    page, remote, errors = open_offline(
        index, _PAGE, wait_for=ROWS, screenshot=tmp_path / "data-docs-index.png"
    )
    assert remote == [], remote  # nothing was even tried
    assert errors == [], errors
    # Bootstrap's reboot applies (not the browser's 8 px margin and separate borders)
    assert (page["margin"], page["collapse"]) == ("0px", "collapse"), page
    assert any(h.endswith("bootstrap/bootstrap.min.css") for h in page["sheets"]), page
    # one row per validation run, each naming its suite
    rows = page["rows"]
    assert len(rows) == len(validations), rows
    assert all(any(s in r for s in ("raw_quotes", "raw_trades", "features_v1")) for r in rows)

"""trading.quality.offline: the Data Docs' CDN links become relative links to the local
copies, at any depth; without fetched assets nothing changes."""

from __future__ import annotations

from pathlib import Path

from trading.quality.offline import STAMP, _lock_digest, assets, cdn_links, localize

PAGE = """<html><head>
<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
<script src="https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js" integrity="sha384-x" crossorigin="anonymous"></script>
<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>
</head><body><img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1&dataContextId=abc"/>
<a href="https://docs.greatexpectations.io/docs/">docs</a></body></html>"""


def _assets(root: Path) -> Path:
    for asset in assets():
        target = root / asset.target
        target.parent.mkdir(parents=True, exist_ok=True)
        if not asset.target.endswith("/"):
            target.write_text(f"/* {asset.package} */")
    (root / STAMP).write_text(_lock_digest() + "\n")
    return root


def test_pages_point_at_local_copies_at_every_depth(tmp_path: Path) -> None:
    site = tmp_path / "site"
    deep = site / "validations" / "raw_quotes" / "run" / "page.html"
    deep.parent.mkdir(parents=True)
    (site / "index.html").write_text(PAGE)
    deep.write_text(PAGE)
    assert len(cdn_links(site)) == 4  # the docs link is not a load
    assert localize(site, _assets(tmp_path / "web"))
    assert cdn_links(site) == []
    index, page = (site / "index.html").read_text(), deep.read_text()
    assert 'href="./static/vendor/bootstrap/bootstrap.min.css"' in index
    assert 'src="../../../static/vendor/popper/popper.min.js">' in page  # no CORS attributes
    assert 'src="../../../static/vendor/vega/vega.min.js"' in page
    assert 'src="./static/images/logo-long.png"' in index  # no call home with the context id
    assert "https://docs.greatexpectations.io/docs/" in index
    assert (site / "static/vendor/bootstrap/bootstrap.min.css").read_text() == "/* bootstrap */"


def test_without_fetched_assets_the_pages_stay_as_they_are(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE)
    assert not localize(site, tmp_path / "nothing-fetched")
    assert (site / "index.html").read_text() == PAGE
    stale = _assets(tmp_path / "web")
    (stale / STAMP).write_text("an older lock\n")
    assert not localize(site, stale)  # assets of another lock are not used

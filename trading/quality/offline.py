"""Data Docs that render offline. Great Expectations 1.24 links its pages' CSS and JS
(Bootstrap, jQuery, bootstrap-table, Font Awesome, Vega) from CDNs and its logo from S3
with the data context's id in the query: offline the pages are unstyled and the index,
which bootstrap-table fills, lists no validations.

`make setup` fetches the pinned npm packages of web_assets.json into .tools/web/
(`fetch_assets`, integrity checked); after every docs build, `localize` copies them into
the site's static/vendor/ and points every page at them (relative links, so the site can
be moved or opened from file://). Without the fetched assets the pages keep the CDN links
and `localize` says how to fetch them."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

LOCK = Path(__file__).with_name("web_assets.json")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
ASSETS = PROJECT_ROOT / ".tools" / "web"
VENDOR = "static/vendor"  # under the Data Docs site
STAMP = ".lock-sha256"  # the lock the fetched assets match
# GX's logo, fetched from S3 with the context's id in the query: the site's own copy
_LOGO = re.compile(r"https://great-expectations-web-assets\.s3\.[a-z0-9-]+\.amazonaws\.com/"
                   r"logo-long\.png\?[^\"']*")  # fmt: skip
_TAG = re.compile(r"<(?:script|link)\b[^>]*>")
_CORS = re.compile(r'\s(?:integrity|crossorigin)="[^"]*"')
log = logging.getLogger("hmmtrader.quality")


class AssetsError(RuntimeError):
    """A web asset could not be fetched or did not match its integrity hash."""


@dataclass(frozen=True)
class Asset:
    package: str
    source: str  # path in the npm tarball (under package/), or a directory ending in /*
    target: str  # path under the assets directory
    replaces: tuple[str, ...]  # the CDN URLs GX writes for it


def _lock() -> dict[str, object]:
    return dict(json.loads(LOCK.read_text()))


def _lock_digest() -> str:
    return hashlib.sha256(LOCK.read_bytes()).hexdigest()


def assets() -> list[Asset]:
    out = []
    for p in _lock()["packages"]:  # type: ignore[attr-defined]
        for f in p["files"]:
            out.append(Asset(p["package"], f["from"], f["to"], tuple(f["replaces"])))
    return out


def ready(root: Path = ASSETS) -> bool:
    """The assets of the current lock are in `root`."""
    stamp = root / STAMP
    return stamp.is_file() and stamp.read_text().strip() == _lock_digest()


def fetch_assets(root: Path = ASSETS, timeout_s: float = 60.0) -> list[str]:
    """Download the lock's npm tarballs (honouring HTTPS_PROXY), check each against its
    sha512 integrity, and extract the listed files into `root`. Nothing when `root`
    already holds this lock's assets. The packages fetched."""
    if ready(root):
        return []
    import httpx

    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    fetched = []
    for p in _lock()["packages"]:  # type: ignore[attr-defined]
        try:
            body = httpx.get(p["tarball"], timeout=timeout_s, follow_redirects=True).content
        except httpx.HTTPError as exc:
            raise AssetsError(f"cannot fetch {p['tarball']}: {exc}") from None
        algo, _, expected = str(p["integrity"]).partition("-")
        got = base64.b64encode(hashlib.new(algo, body).digest()).decode()
        if got != expected:
            raise AssetsError(f"{p['tarball']}: {algo} {got} is not the locked {expected}")
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
            for f in p["files"]:
                src, dest = f["from"], tmp / f["to"]
                names = (
                    [n for n in members if n.startswith(src[:-1]) and "/" not in n[len(src) - 1 :]]
                    if src.endswith("/*")
                    else [src]
                )
                if not names or any(n not in members for n in names):
                    raise AssetsError(f"{p['package']}@{p['version']} has no {src}")
                for name in names:
                    out = dest / Path(name).name if src.endswith("/*") else dest
                    out.parent.mkdir(parents=True, exist_ok=True)
                    data = tar.extractfile(members[name])
                    assert data is not None
                    out.write_bytes(data.read())
        fetched.append(f"{p['package']}@{p['version']}")
    (tmp / STAMP).write_text(_lock_digest() + "\n")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return fetched


def localize(site: Path, root: Path = ASSETS) -> bool:
    """Copy the assets into `site`/static/vendor and point every page of the site at them.
    False (pages unchanged, a warning logged) when the assets were not fetched."""
    if not ready(root):
        log.warning(
            "Data Docs keep their CDN links (they render only online): the web assets are "
            "not in %s; run `make setup` to fetch them",
            root,
        )
        return False
    vendor = site / VENDOR
    if not (vendor / STAMP).is_file() or (vendor / STAMP).read_text() != (root / STAMP).read_text():
        shutil.rmtree(vendor, ignore_errors=True)
        shutil.copytree(root, vendor)
    table = [(url, a.target) for a in assets() for url in a.replaces]
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        up = os.path.relpath(site, page.parent).replace(os.sep, "/")
        new = _LOGO.sub(f"{up}/static/images/logo-long.png", text)
        for url, target in table:
            new = new.replace(f'"{url}"', f'"{up}/{VENDOR}/{target}"')
        # a local file is not fetched with CORS: drop the CDN's crossorigin and integrity
        # (the fetch checked each package's integrity)
        new = _TAG.sub(lambda m: _CORS.sub("", m[0]) if f"/{VENDOR}/" in m[0] else m[0], new)
        if new != text:
            page.write_text(new, encoding="utf-8")
    return True


def cdn_links(site: Path) -> list[str]:
    """The remote scripts, stylesheets and images the site's pages still load (links to
    GX's documentation are not loads and are not counted)."""
    found = set()
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        found |= set(re.findall(r'(?:src|<link[^>]*href)="(https?://[^"]+)"', text))
    return sorted(found)

"""Fetch the Data Docs' pinned web assets (trading/quality/web_assets.json) from the npm
registry into .tools/web/, integrity checked; nothing when they are already there.
Run by scripts/bootstrap.sh (make setup)."""

from __future__ import annotations

import sys

from trading.quality.offline import ASSETS, AssetsError, fetch_assets


def main() -> int:
    try:
        fetched = fetch_assets()
    except AssetsError as exc:
        print(f"bootstrap: Data Docs web assets: {exc} (the docs then render only online)",
              file=sys.stderr)  # fmt: skip
        return 1
    if fetched:
        print(f"bootstrap: fetched the Data Docs web assets into {ASSETS}: {', '.join(fetched)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

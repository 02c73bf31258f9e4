"""A local HTTP server laid out like data.binance.vision (zips plus .CHECKSUM files, Range
support, connection cuts on demand), for the archive and nightly-flow tests."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class ArchiveSite:
    """State of the fake archive site, shared with the request handler threads."""

    root: Path
    url: str = ""
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    cuts: dict[str, int] = field(default_factory=dict)  # path -> requests left to cut
    sent_before_cut: dict[str, list[int]] = field(default_factory=dict)
    ignore_range: set[str] = field(default_factory=set)  # paths answered 200 to a Range
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, relpath: str, csv_text: str, checksum: str | None = None) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(Path(relpath).with_suffix(".csv").name, csv_text)
        data = buffer.getvalue()
        target = self.root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        digest = checksum or hashlib.sha256(data).hexdigest()
        (self.root / f"{relpath}.CHECKSUM").write_text(f"{digest}  {target.name}\n")
        return data

    def hits(self, relpath: str) -> list[str | None]:
        with self.lock:
            return [rng for path, rng in self.requests if path == "/" + relpath]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        site = self.server.site
        path, rng = self.path.split("?")[0], self.headers.get("Range")
        with site.lock:
            site.requests.append((path, rng))
            cut = site.cuts.get(path, 0) > 0
            if cut:
                site.cuts[path] -= 1
            if path in site.ignore_range:
                rng = None
        target = site.root / path.lstrip("/")
        if ".." in path or not target.is_file():
            self.send_error(404)
            return
        data = target.read_bytes()
        start = 0
        if rng is not None:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if not cut:
            self.wfile.write(body)
            return
        half = len(body) // 2
        self.wfile.write(body[:half])
        self.wfile.flush()
        with site.lock:
            site.sent_before_cut.setdefault(path, []).append(start + half)
        self.connection.shutdown(socket.SHUT_WR)  # FIN after half the promised body
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, site: ArchiveSite) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.site = site


@contextmanager
def archive_site(root: Path) -> Iterator[ArchiveSite]:
    """An ArchiveSite serving `root` on a free port of 127.0.0.1, stopped on exit."""
    state = ArchiveSite(root=root)
    state.root.mkdir(parents=True, exist_ok=True)
    server = _Server(state)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

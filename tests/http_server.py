"""A real HTTP server on 127.0.0.1 for download tests: byte ranges, ETags, a Hub-style tree API, and faults.

It serves files registered by path. A file can be set to drop the connection part-way through its first
full transfer, to be replaced by a corrupted copy after a number of transfers, or the server can ignore
``Range`` headers as some servers do. Paths under ``/datasets/OWNER/REPO/resolve/REV/`` are also listed by
``/api/datasets/OWNER/REPO/tree/REV/PATH`` the way the Hugging Face Hub answers (LFS files carry their
sha256 as ``lfs.oid``). Every request is logged with its ``Range`` header.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

_TREE = re.compile(r"^/api/datasets/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)/?(?P<path>.*)$")


@dataclass
class Served:
    body: bytes
    lfs: bool = False
    drop_first_at: int | None = None  # bytes sent before the first full transfer is cut
    corrupt_after: int | None = None  # transfers served intact before a corrupted copy is served
    transfers: int = 0


@dataclass
class FileServer:
    """The server's state; ``url(path)`` is the address of a registered path."""

    files: dict[str, Served] = field(default_factory=dict)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    honour_ranges: bool = True
    token: str | None = None  # when set, the Hub's paths (/api/, /datasets/) need "Authorization: Bearer <token>"
    port: int = 0
    _httpd: Any = None

    def add(self, path: str, body: bytes, **faults: Any) -> str:
        self.files[path] = Served(body, **faults)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests_for(self, path: str) -> list[tuple[str, str | None]]:
        return [(method, rng) for method, p, rng in self.log if p == path]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def start_file_server() -> FileServer:
    state = FileServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet test output
            pass

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(head=True)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(head=False)

        def _answer(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            state.log.append((self.command, path, self.headers.get("Range")))
            hub = path.startswith(("/api/", "/datasets/"))
            if hub and state.token and self.headers.get("Authorization") != f"Bearer {state.token}":
                return self._plain(401, b'{"error": "gated repository"}', "application/json")
            tree = _TREE.match(path)
            if tree is not None:
                return self._tree(tree["repo"], tree["rev"], tree["path"].strip("/"))
            served = state.files.get(path)
            if served is None:
                return self._plain(404, b"not found")
            body = served.body
            if served.corrupt_after is not None and served.transfers >= served.corrupt_after:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            start = self._range_start(etag) if state.honour_ranges else None
            if head:
                return self._headers(200, len(body), etag)
            if start is None:
                served.transfers += 1
                cut = served.drop_first_at if served.transfers == 1 else None
                self._headers(200, len(body), etag)
                self._send(body if cut is None else body[:cut], cut is not None)
            else:
                self._headers(206, len(body) - start, etag, f"bytes {start}-{len(body) - 1}/{len(body)}")
                self._send(body[start:], False)

        def _range_start(self, etag: str) -> int | None:
            match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
            if match is None or self.headers.get("If-Range") not in (None, etag):
                return None
            return int(match[1])

        def _headers(self, status: int, length: int, etag: str, content_range: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(length))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes" if state.honour_ranges else "none")
            if content_range:
                self.send_header("Content-Range", content_range)
            self.end_headers()

        def _send(self, data: bytes, drop: bool) -> None:
            self.wfile.write(data)
            self.wfile.flush()
            if drop:  # the peer sees fewer bytes than Content-Length promised
                self.close_connection = True
                self.connection.shutdown(2)

        def _plain(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _tree(self, repo: str, rev: str, folder: str) -> None:
            base = f"/datasets/{repo}/resolve/{rev}/"
            prefix = f"{folder}/" if folder else ""
            entries = []
            for path, served in sorted(state.files.items()):
                if path.startswith(base + prefix):
                    entry: dict[str, Any] = {"type": "file", "path": path[len(base):], "size": len(served.body),
                                             "oid": hashlib.sha1(served.body).hexdigest()}
                    if served.lfs:
                        entry["lfs"] = {"oid": hashlib.sha256(served.body).hexdigest(), "size": len(served.body)}
                    entries.append(entry)
            if not entries:
                return self._plain(404, b'{"error": "not found"}', "application/json")
            self._plain(200, json.dumps(entries).encode(), "application/json")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    state._httpd = httpd
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return state

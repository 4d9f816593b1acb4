"""A read-only HTTP server for the outbox: the library documents DeoVR and HereSphere read,
thumbnails, and the videos themselves with range requests (players seek by asking for byte
ranges).

Videos are addressed by their library id, never by a path from the request, so no request can
name a file outside the outbox.
"""

from __future__ import annotations

import html
import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import numpy as np

from stereospot_pipeline.serve.library import (
    Entry,
    deovr_library,
    deovr_video,
    heresphere_library,
    heresphere_video,
    scan,
)

_CHUNK = 1 << 20
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class LibraryServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, address: tuple[str, int]):
        self.root = root.resolve()
        self._thumbs: dict[tuple[str, int], bytes] = {}
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    def entries(self) -> dict[str, Entry]:
        return {e.id: e for e in scan(self.root)}

    def thumbnail(self, entry: Entry) -> bytes:
        """PNG of one eye at 10% of the video, made once per file version."""
        from stereospot_pipeline.media.preview import frame_at, png_bytes, thumbnail

        key = (entry.id, entry.path.stat().st_mtime_ns)
        with self._lock:
            if key in self._thumbs:
                return self._thumbs[key]
        rgb = frame_at(entry.path, 0.1)
        if entry.stereo == "sbs":
            rgb = rgb[:, : rgb.shape[1] // 2]
        elif entry.stereo == "tb":
            rgb = rgb[: rgb.shape[0] // 2]
        png = png_bytes(thumbnail(np.ascontiguousarray(rgb)))
        with self._lock:
            self._thumbs[key] = png
        return png


class _Handler(BaseHTTPRequestHandler):
    server: LibraryServer
    server_version = "stereospot"
    # Keep-alive: players issue many range requests while seeking.
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        pass  # a headset polls the library; the CLI prints what it serves instead

    def do_GET(self) -> None:
        self._route(send_body=True)

    def do_HEAD(self) -> None:
        self._route(send_body=False)

    def do_POST(self) -> None:
        # HereSphere asks for its documents with POST (a JSON body naming what it wants); the
        # body changes nothing here.
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 16))
        self._route(send_body=True)

    def _route(self, send_body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p]
        base = f"http://{self.headers.get('Host') or '%s:%d' % self.server.server_address[:2]}"
        if ".." in parts or "\\" in path:
            return self._error(HTTPStatus.NOT_FOUND)
        if not parts:
            return self._send_bytes(self._index(base).encode(), "text/html; charset=utf-8", send_body)
        entries = self.server.entries()
        head, rest = parts[0], parts[1:]
        if head == "deovr" and not rest:
            return self._send_json(deovr_library(list(entries.values()), base), send_body)
        if head == "heresphere" and not rest:
            return self._send_json(heresphere_library(list(entries.values()), base), send_body, heresphere=True)
        entry = entries.get(rest[0].removesuffix(".json").removesuffix(".png")) if rest else None
        if entry is None:
            return self._error(HTTPStatus.NOT_FOUND)
        if head == "deovr" and len(rest) == 1:
            return self._send_json(deovr_video(entry, base), send_body)
        if head == "heresphere" and len(rest) == 1:
            return self._send_json(heresphere_video(entry, base), send_body, heresphere=True)
        if head == "thumb" and len(rest) == 1:
            try:
                png = self.server.thumbnail(entry)
            except Exception:  # a thumbnail is an extra: a video it fails on still plays
                return self._error(HTTPStatus.NOT_FOUND)
            return self._send_bytes(png, "image/png", send_body)
        if head == "media" and len(rest) in (1, 2):
            return self._send_file(entry, send_body)
        return self._error(HTTPStatus.NOT_FOUND)

    def _index(self, base: str) -> str:
        rows = "".join(
            f'<li><a href="/media/{e.id}/{html.escape(quote(e.path.name))}">{html.escape(e.relpath)}</a> '
            f"({e.stereo}{', 180' if e.projection == '180' else ''}, {e.width}x{e.height}, {e.duration_s:.0f} s)</li>"
            for e in self.server.entries().values())
        return (f"<!doctype html><title>stereospot library</title><h1>stereospot library</h1>"
                f"<p>DeoVR: <code>{base}/deovr</code> &middot; HereSphere: <code>{base}/heresphere</code></p>"
                f"<ul>{rows}</ul>")

    def _send_json(self, doc: dict, send_body: bool, heresphere: bool = False) -> None:
        extra = {"HereSphere-JSON-Version": "1"} if heresphere else {}
        self._send_bytes(json.dumps(doc).encode(), "application/json", send_body, extra)

    def _send_bytes(self, data: bytes, content_type: str, send_body: bool, extra: dict | None = None) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(data)

    def _send_file(self, entry: Entry, send_body: bool) -> None:
        size = entry.path.stat().st_size
        start, end = 0, size - 1
        status = HTTPStatus.OK
        requested = self.headers.get("Range")
        if requested:
            span = _byte_range(requested, size)
            if span is None:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            # 206 even for the whole file ("bytes=0-"): that is how a player learns it can seek.
            status = HTTPStatus.PARTIAL_CONTENT
            start, end = span
        self.send_response(status)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status is HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not send_body:
            return
        with open(entry.path, "rb") as fh:
            fh.seek(start)
            left = end - start + 1
            while left > 0:
                block = fh.read(min(_CHUNK, left))
                if not block:
                    break
                try:
                    self.wfile.write(block)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the player seeks elsewhere and drops the connection
                left -= len(block)

    def _error(self, status: HTTPStatus) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The one byte span ``header`` asks for, inclusive, or None if it cannot be served. Lists of
    ranges are answered with their first span (players ask for one)."""
    first = header.split(",")[0].strip()
    match = _RANGE.match(first)
    if not match or size == 0 or match.groups() == ("", ""):
        return None
    start, end = match.groups()
    if start == "":  # the last N bytes
        return max(0, size - int(end)), size - 1
    start = int(start)
    end = min(int(end), size - 1) if end else size - 1
    if start >= size or end < start:
        return None
    return start, end


def make_server(root: Path, host: str = "127.0.0.1", port: int = 8080) -> LibraryServer:
    return LibraryServer(root, (host, port))

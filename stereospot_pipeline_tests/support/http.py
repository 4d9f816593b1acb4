"""A real HTTP server on 127.0.0.1 for tests: serves fixed answers by path (GET, and HEAD without
the body) and records POSTs (the alert webhook)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    body: bytes
    content_type: str = "video/mp4"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    send_length: bool = True


@dataclass
class Loopback:
    url: str
    routes: dict[str, Answer]
    posts: list[dict]
    requests: list[str]


@contextmanager
def loopback_http(routes: dict[str, Answer] | None = None) -> Iterator[Loopback]:
    state = Loopback(url="", routes=dict(routes or {}), posts=[], requests=[])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self.do_GET(body=False)

        def do_GET(self, body: bool = True) -> None:
            state.requests.append(self.path)
            answer = state.routes.get(self.path)
            if answer is None:
                self.send_error(404)
                return
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if answer.send_length:
                self.send_header("Content-Length", str(len(answer.body)))
            else:
                self.send_header("Connection", "close")
            self.end_headers()
            if body:
                self.wfile.write(answer.body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.posts.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

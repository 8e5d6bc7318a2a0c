"""An HTTP proxy on 127.0.0.1 that loses answers on purpose, in front of a real ledger.

Each request takes the next action of ``script`` (then ``forward``):

- ``forward``: pass the request on and the answer back;
- ``lose``: pass the request on (the ledger decides it), then close the
  connection without answering: the client cannot know what happened;
- ``refuse``: close the connection without passing the request on;
- ``503``: answer ``503`` with ``Retry-After: 0`` (a problem), not passing it on.

Every request is recorded (method, path, headers, body) in ``seen``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class FlakyProxy:
    """Forwards to ``upstream`` as scripted; ``url`` is where clients send."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.script: list[str] = []
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    action = proxy.script.pop(0) if proxy.script else "forward"
                    proxy.seen.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": json.loads(body) if body else None,
                            "action": action,
                        }
                    )
                if action == "refuse":
                    self.close_connection = True
                    return
                if action == "503":
                    problem = json.dumps(
                        {"code": "unavailable", "detail": "scripted", "status": 503}
                    ).encode()
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Type", "application/problem+json")
                    self.send_header("Content-Length", str(len(problem)))
                    self.end_headers()
                    self.wfile.write(problem)
                    return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                answer = httpx.request(
                    self.command, proxy.upstream + self.path, headers=headers, content=body, timeout=10
                )
                if action == "lose":
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops serving."""
        self._server.shutdown()
        self._server.server_close()

"""A webhook receiver on 127.0.0.1 for the tests: records every delivery, answers 200."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Records ``{"path", "headers", "body"}`` per POST; ``handle`` may answer instead (status, body)."""

    def __init__(self, handle: Callable[[dict[str, Any]], tuple[int, bytes]] | None = None) -> None:
        self.received: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                request = {"path": self.path, "headers": dict(self.headers.items()), "body": body}
                status, answer = handle(request) if handle else (200, b"")
                with receiver._changed:
                    receiver.received.append({**request, "status": status})
                    receiver._changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(
        self, test: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
    ) -> list[dict[str, Any]]:
        """Until ``test(received)`` holds (or the timeout: then what arrived)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not test(self.received) and time.monotonic() < deadline:
                self._changed.wait(timeout=max(0.0, deadline - time.monotonic()))
            return list(self.received)

    def close(self) -> None:
        """Stops receiving."""
        self._server.shutdown()
        self._server.server_close()

"""A loopback file server standing in for an original-release host (MMDetection's server, Google Drive's download).

Serves ``files`` (name -> bytes) over real HTTP on 127.0.0.1 with ``Content-Length`` and ``Range`` (resume). Faults
for tests: ``status`` (e.g. 500 for every request), ``truncate_to`` (send only the first N bytes then close),
``hang`` (accept and never answer). ``requests`` logs each ``(method, path, range)``.

Example:
    with ReleaseServer({"x.pth": data}) as server:
        url = server.url + "/x.pth"
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


class ReleaseServer:
    """A threaded loopback file server; use as a context manager."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.requests: list[tuple[str, str, str | None]] = []
        self.status: int | None = None
        self.truncate_to: int | None = None
        self.hang = False
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="release-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ReleaseServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Run in the foreground (for scripts); stops on KeyboardInterrupt."""
        self._httpd.serve_forever()


def _make_handler(server: ReleaseServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(send_body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(send_body=True)

        def _serve(self, send_body: bool) -> None:
            name = unquote(urlsplit(self.path).path).lstrip("/")
            server.requests.append((self.command, "/" + name, self.headers.get("Range")))
            if server.hang:
                server._stop.wait(60)
                return
            if server.status is not None:
                self._plain(server.status, b"server says no")
                return
            data = server.files.get(name)
            if data is None:
                self._plain(404, b"not found")
                return
            start = 0
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes=") and ranged.endswith("-"):
                start = int(ranged[6:-1])
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not send_body:
                return
            body = data[start:]
            if server.truncate_to is not None:
                self.wfile.write(body[: server.truncate_to])
                self.wfile.flush()
                time.sleep(0.05)
                self.close_connection = True
                return
            self.wfile.write(body)

        def _plain(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler

"""Fixtures for the ingest tests: realistic CRM export files and a real HTTP server.

The HTTP server is ``http.server`` on 127.0.0.1 in a background thread; tests register
routes (status, headers, body) on it. Nothing is mocked.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["MESSY_CRM_CSV", "HttpServer", "http_server", "write_bytes"]

#: A CRM export as Excel on a European Windows writes it: UTF-8 BOM, semicolons,
#: quoted fields with embedded delimiters and line breaks, a repeated header name,
#: a blank line, a row without email, "Name <addr>" and mailto: cells.
MESSY_CRM_CSV = (
    "\ufeffRecord ID;First Name;Email;Notes;Email\r\n"
    '101;Jane;"Jane Doe <Jane.Doe@Acme.test>";"likes ; semicolons\r\nand line breaks";jd@home.test\r\n'
    '102;"Bob ""Bobby""";bob@acme.test;;\r\n'
    "\r\n"
    "103;Zoë;;no email here;\r\n"
    '104;Ann;"mailto:ANN@Beta.test?subject=Hi";"quote "" inside";\r\n'
)


def write_bytes(path: Path, data: bytes | str, encoding: str = "utf-8") -> Path:
    path.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    return path


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class HttpServer:
    """A real HTTP/1.1 server on loopback with programmable routes."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        routes, requests = self.routes, self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                requests.append((self.path, dict(self.headers)))
                route = routes.get(path, Route(status=404, body=b"not found"))
                if route.delay:
                    time.sleep(route.delay)
                try:
                    self.send_response(route.status)
                    for name, value in route.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def add(
        self,
        path: str,
        body: bytes | str = b"",
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> str:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.routes[path] = Route(status=status, body=data, headers=headers or {}, delay=delay)
        return self.url(path)

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server = HttpServer().start()
    try:
        yield server
    finally:
        server.stop()

"""A small, real HTTP/1.1 server on loopback for tests: a fake verification API and a
webhook receiver.

It runs the standard library's :class:`http.server.ThreadingHTTPServer` in its own thread,
so synchronous callers (the CLI, Prefect flows) and async tests can both talk to it over a
real TCP socket. Nothing is mocked: clients see real status lines, headers, delays,
connection resets and timeouts.

Responses are scriptable per path:

* :meth:`HttpServer.enqueue` appends replies to a FIFO queue, one reply per request;
* :meth:`HttpServer.set_default` sets the reply used once the queue is empty;
* :meth:`HttpServer.set_handler` installs a callable ``(RecordedRequest) -> Reply`` for
  dynamic answers (e.g. a verification API answering from the posted address).

Order of precedence for a request: queued reply, handler, default reply, then ``404``.
Every request is recorded (method, path, query, headers, raw body) in :attr:`requests`,
and :attr:`max_concurrent` is the highest number of requests in flight at once.

Example::

    with HttpServer() as server:
        server.enqueue("/verify", Reply(503), Reply(200, body={"status": "valid"}))
        ...  # point the client at server.url
        assert len(server.requests_for("/verify")) == 2
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

__all__ = ["HttpServer", "RecordedRequest", "Reply"]


@dataclass(frozen=True)
class Reply:
    """One scripted response.

    ``body`` may be bytes, str (sent as UTF-8) or any JSON-ready value (sent as JSON with
    ``Content-Type: application/json`` unless ``headers`` say otherwise). ``delay`` seconds
    pass before the status line is sent (a slow or hanging server); ``drop=True`` closes
    the connection without any response (a reset peer). ``drip=(n, seconds)`` sends the
    body ``n`` bytes at a time with ``seconds`` between writes: the "slow HTTP" server
    (OWASP's Slow HTTP attack pattern, and tarpits such as Nepenthes or endlessh) that
    never trips a per-read timeout; the bytes written before the client hung up are in
    :attr:`HttpServer.sent`.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = b""
    delay: float = 0.0
    drop: bool = False
    drip: tuple[int, float] | None = None

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        body = self.body
        if isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode("utf-8")
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            data = json.dumps(body).encode("utf-8")
            headers.setdefault("Content-Type", "application/json")
        return data, headers


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server received it; header names are matched case-insensitively."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    received_at: float  # time.monotonic()

    def header(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return default

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[RecordedRequest], Reply]


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read .requests
        pass

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        owner = self.server.owner
        body = self._read_body()
        parts = urlsplit(self.path)
        request = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers=tuple(self.headers.items()),
            body=body,
            received_at=time.monotonic(),
        )
        owner._enter(request)
        try:
            reply = owner._reply_for(request)
            if reply.delay > 0 and owner._stopping.wait(reply.delay):
                self.close_connection = True
                return
            if reply.drop:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            data, headers = reply.encoded()
            sent = 0
            try:
                self.send_response(reply.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD" and reply.drip is None:
                    self.wfile.write(data)
                    sent = len(data)
                elif self.command != "HEAD" and reply.drip is not None:
                    self.wfile.flush()
                    step, pause = reply.drip
                    for start in range(0, len(data), max(step, 1)):
                        if owner._stopping.wait(pause):
                            break
                        self.wfile.write(data[start : start + step])
                        self.wfile.flush()
                        sent = min(len(data), start + step)
                self.wfile.flush()
                owner.sent.append((request.path, sent, len(data)))
            except OSError:  # the client gave up (timeout) while we were sleeping
                owner.sent.append((request.path, sent, len(data)))
                self.close_connection = True
        finally:
            owner._leave()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: HttpServer


class HttpServer:
    """A real HTTP server on ``host`` (loopback) in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # no request in flight
        self._queues: dict[str, deque[Reply]] = {}
        self._defaults: dict[str, Reply] = {}
        self._handlers: dict[str, Handler] = {}
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._in_flight = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[RecordedRequest] = []
        self.max_concurrent = 0
        #: ``(path, bytes of body written, body length)`` per response, in order
        self.sent: list[tuple[str, int, int]] = []

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> HttpServer:
        server = _Server((self._host, self._port), _RequestHandler)
        server.owner = self
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"HttpServer:{self._port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests still sleeping in a ``delay`` are abandoned at once.
        When it returns, every request begun has left its handler (up to 5 s), so
        :attr:`sent` and :attr:`requests` are complete: handler threads are daemons that
        ``server_close`` does not join."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=5)
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8123`` (no trailing slash)."""
        return f"http://{self._host}:{self._port}"

    def url_for(self, path: str) -> str:
        return self.url + (path if path.startswith("/") else "/" + path)

    # -- scripting -------------------------------------------------------------------
    def enqueue(self, path: str, *replies: Reply) -> None:
        """Queue replies for ``path``: each request takes the next one."""
        with self._lock:
            self._queues.setdefault(path, deque()).extend(replies)

    def set_default(self, path: str, reply: Reply) -> None:
        """The reply for ``path`` once its queue is empty (and no handler is set)."""
        with self._lock:
            self._defaults[path] = reply

    def set_handler(self, path: str, handler: Handler) -> None:
        """Answer ``path`` dynamically (after any queued replies)."""
        with self._lock:
            self._handlers[path] = handler

    def requests_for(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def clear(self) -> None:
        """Forget recorded requests, queues, defaults and handlers."""
        with self._lock:
            self.requests.clear()
            self._queues.clear()
            self._defaults.clear()
            self._handlers.clear()
            self.max_concurrent = 0

    # -- internals (called from request threads) ----------------------------------------
    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _enter(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)
            self._in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def _reply_for(self, request: RecordedRequest) -> Reply:
        with self._lock:
            queue = self._queues.get(request.path)
            if queue:
                return queue.popleft()
            handler = self._handlers.get(request.path)
            default = self._defaults.get(request.path)
        if handler is not None:
            try:
                return handler(request)
            except Exception as exc:  # noqa: BLE001 - a broken handler is a visible 500
                return Reply(500, body=f"handler error: {type(exc).__name__}: {exc}")
        if default is not None:
            return default
        return Reply(404, body="not found")

"""A port-25 middlebox on loopback: accepts TCP connections and never lets SMTP through.

Many networks that block outbound mail do not refuse the connection (which a client
recognises at once, ``ECONNREFUSED``) nor drop the SYN (a connect timeout): a firewall or
transparent proxy completes the TCP handshake itself and then closes the connection, or
resets it, or holds it open without a word -- before any SMTP banner, which RFC 5321 3.1
says a server sends first. To the prober every MX host then looks "reachable, but closed
the connection", which is why issue 8 asks to name it: it is the network, never the
mailbox. :class:`Middlebox` plays that box for tests and ``mailsift doctor``:

``close``   accept, then close at once (FIN): the client reads end-of-file;
``reset``   accept, then abort (RST, ``SO_LINGER`` 0): the client gets ``ECONNRESET``;
``silent``  accept and say nothing until the client gives up (or :meth:`stop`).

::

    with Middlebox(["127.0.3.1"], port=world.smtp.port) as box:
        world.dns.add_a("mx.boxed.test", "127.0.3.1")
        world.dns.add_mx("boxed.test", [(10, "mx.boxed.test")])

One background thread serves every address with a selector; :meth:`stop` returns at
once and leaves no thread or socket behind. Loopback addresses only.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import struct
import threading
from collections.abc import Iterable
from typing import Literal, Self

__all__ = ["Middlebox", "MiddleboxMode"]

MiddleboxMode = Literal["close", "reset", "silent"]


class Middlebox:
    """Accept TCP on ``port`` of each of ``hosts`` (loopback IPs) and kill the session."""

    def __init__(
        self, hosts: Iterable[str] = ("127.0.0.1",), port: int = 0, mode: MiddleboxMode = "close"
    ) -> None:
        if mode not in ("close", "reset", "silent"):
            raise ValueError(f"unknown middlebox mode {mode!r}")
        self.hosts = [self._loopback(h) for h in hosts]
        if not self.hosts:
            raise ValueError("a middlebox needs at least one address")
        self.port = port
        self.mode: MiddleboxMode = mode
        #: Connections accepted so far (all addresses).
        self.connections = 0
        self._listeners: list[socket.socket] = []
        self._held: list[socket.socket] = []
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @staticmethod
    def _loopback(host: str) -> str:
        address = ipaddress.ip_address(host)
        if not address.is_loopback:
            raise ValueError(f"{host} is not a loopback address: the middlebox is for tests")
        return str(address)

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            return self
        try:
            for host in self.hosts:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                self._listeners.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, self.port))
                if not self.port:
                    self.port = sock.getsockname()[1]
                sock.listen(64)
                sock.setblocking(False)
        except OSError:
            self._close_all()
            raise
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"mailsift-middlebox-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        try:
            assert self._wake_w is not None
            self._wake_w.send(b"x")
        except OSError:
            pass
        thread.join(timeout=5)
        self._thread = None
        self._close_all()

    def _close_all(self) -> None:
        for sock in [*self._listeners, *self._held, self._wake_r, self._wake_w]:
            if sock is not None:
                sock.close()
        self._listeners, self._held = [], []
        self._wake_r = self._wake_w = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Middlebox {self.mode} {','.join(self.hosts)} port {self.port}>"

    # -- the serving thread -----------------------------------------------------------

    def _serve(self) -> None:
        assert self._wake_r is not None
        selector = selectors.DefaultSelector()
        for sock in self._listeners:
            selector.register(sock, selectors.EVENT_READ, "accept")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if self._stopping.is_set():
                        break
                    if key.data == "accept":
                        self._accept(key.fileobj, selector)  # type: ignore[arg-type]
                    elif key.data == "held":
                        self._drain(key.fileobj, selector)  # type: ignore[arg-type]
        finally:
            selector.close()

    def _accept(self, listener: socket.socket, selector: selectors.BaseSelector) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        self.connections += 1
        if self.mode == "close":
            conn.close()  # FIN before any byte: the client reads EOF where the banner goes
        elif self.mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # SO_LINGER 0: close sends RST
        else:
            conn.setblocking(False)
            self._held.append(conn)
            selector.register(conn, selectors.EVENT_READ, "held")

    def _drain(self, conn: socket.socket, selector: selectors.BaseSelector) -> None:
        """``silent``: swallow what the client sends; forget it when it hangs up."""
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            selector.unregister(conn)
            self._held.remove(conn)
            conn.close()

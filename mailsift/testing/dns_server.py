"""An authoritative DNS server on loopback for tests, benchmarks and the demo.

:class:`DnsServer` answers, over UDP and TCP on one port, for the names it has been
given, with the answers a real authoritative server gives (RFC 1034/1035, RFC 2308):

- a name it holds, asked for a type it has: ``NOERROR`` with the records (``aa`` set);
- a name it holds (or an empty non-terminal above one, RFC 8020), asked for a type it
  does not have: ``NOERROR`` with no answer and the zone's SOA in the authority section
  ("NODATA", RFC 2308 section 2.2) -- dnslib's stock zone resolver answers ``NXDOMAIN``
  here, which is wrong, hence the own resolver below;
- a name it does not hold: ``NXDOMAIN`` with the SOA (RFC 2308 section 2.1).

Failures can be injected per name: ``servfail`` answers ``SERVFAIL``, ``timeout``
silently drops the query. Every query is recorded in :attr:`DnsServer.queries`.

The root (``.``) always exists, as on the real internet: a query for it gets ``NOERROR``
(and the SOA for a type it has no records of), and so does every name above a held one
(a TLD such as ``test``: an empty non-terminal, RFC 8020).

A whole resolver can be made to lie, as broken networks do, with
:meth:`DnsServer.set_global_failure` (see there): ``nxdomain`` for every name (captive
portals, DNS filtering, broken sandboxes), ``servfail`` for every name, ``timeout`` (no
answer at all), or ``wildcard`` (every name that does not exist gets an address: the
NXDOMAIN rewriting of some ISPs and captive portals).

dnslib does the wire format; the sockets are served by one background thread with a
selector (dnslib's own socketserver needs half a second to shut down and a thread per
request), so :meth:`DnsServer.stop` returns at once and leaves no thread behind.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import struct
import threading
from collections.abc import Sequence
from typing import Literal, Self

import dns.exception
import dns.name
import dns.reversename
from dnslib import AAAA, CLASS, MX, OPCODE, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord
from dnslib.dns import EDNS0
from dnslib.server import BaseResolver

__all__ = ["DnsServer", "FailureMode", "GlobalFailureMode"]

FailureMode = Literal["servfail", "timeout", "truncated_empty"]
#: What :meth:`DnsServer.set_global_failure` can make of every answer.
GlobalFailureMode = Literal["nxdomain", "servfail", "timeout", "wildcard"]

#: Names that exist on the real internet whatever a world holds: the root and a few
#: top-level domains. They answer NOERROR with no data (NODATA), as an empty
#: non-terminal does (RFC 8020); a resolver's health check asks for them.
_ALWAYS_EXIST: frozenset[tuple[bytes, ...]] = frozenset({(), (b"com",), (b"net",), (b"org",)})

_Key = tuple[bytes, ...]  # lower-case labels, root first omitted: ("mx", "acme", "test")
_Record = tuple[int, object, int]  # (qtype, dnslib rdata, ttl)

_UDP_PLAIN_LIMIT = 512  # RFC 1035 4.2.1, without EDNS
_EDNS_PAYLOAD = 1232  # what we advertise and honour at most (DNS flag day 2020)
_MAX_TCP_MESSAGE = 65535
_CLASS_ANY = 255  # RFC 1035 3.2.5 QCLASS "*"


def _key(name: str) -> _Key:
    """Lower-case A-label labels of ``name`` (Unicode names are IDNA-encoded).

    Raises ``ValueError`` for a name that cannot be in DNS (empty label, label over 63
    octets, name over 255 octets, whitespace or control characters).
    """
    if not isinstance(name, str):
        raise TypeError(f"a DNS name must be a str, not {type(name).__name__}")
    text = name.strip()
    if text in ("", "."):
        return ()
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(f"bad DNS name {name!r}: whitespace or control character")
    try:
        parsed = dns.name.from_text(text)
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        raise ValueError(f"bad DNS name {name!r}: {exc}") from None
    return tuple(label.lower() for label in parsed.labels if label)


def _text(key: _Key) -> str:
    return ".".join(label.decode("ascii", "backslashreplace") for label in key) or "."


def _qtype_text(qtype: int) -> str:
    return str(QTYPE.get(qtype, f"TYPE{qtype}"))


class _ZoneResolver(BaseResolver):
    """The zone data and the answering logic; thread-safe (one lock around the data)."""

    def __init__(self, negative_ttl: int = 300) -> None:
        self.negative_ttl = negative_ttl
        self._lock = threading.Lock()
        self._records: dict[_Key, list[_Record]] = {}
        self._held: set[_Key] = set()  # names added, with or without records
        self._names: set[_Key] = set()  # every held name and its ancestors (RFC 8020)
        self._failures: dict[_Key, FailureMode] = {}
        self._global_failure: GlobalFailureMode | None = None
        self._wildcard_ip = "127.0.0.1"

    # -- zone editing -----------------------------------------------------------------

    def add(self, key: _Key, qtype: int, rdata: object, ttl: int) -> None:
        if not 0 <= int(ttl) <= 2**31 - 1:
            raise ValueError(f"ttl {ttl} out of range")
        with self._lock:
            self._add_name(key)
            records = self._records.setdefault(key, [])
            for old_type, old_rdata, _ in records:
                if old_type == qtype and repr(old_rdata) == repr(rdata):
                    return  # an RRset is a set (RFC 2181 5)
            records.append((qtype, rdata, int(ttl)))

    def add_name(self, key: _Key) -> None:
        with self._lock:
            self._add_name(key)

    def _add_name(self, key: _Key) -> None:
        self._held.add(key)
        for start in range(len(key)):
            self._names.add(key[start:])

    def remove(self, key: _Key, qtype: int | None) -> None:
        with self._lock:
            if qtype is None:
                self._records.pop(key, None)
                self._held.discard(key)
                self._names = set()
                for held in list(self._held):
                    self._add_name(held)
            elif key in self._records:
                self._records[key] = [r for r in self._records[key] if r[0] != qtype]

    def set_failure(self, key: _Key, mode: FailureMode | None) -> None:
        with self._lock:
            if mode is None:
                self._failures.pop(key, None)
            else:
                self._failures[key] = mode

    def set_global_failure(self, mode: GlobalFailureMode | None, wildcard_ip: str) -> None:
        with self._lock:
            self._global_failure = mode
            self._wildcard_ip = wildcard_ip

    # -- answering --------------------------------------------------------------------

    def _soa(self, key: _Key) -> RR:
        apex = key[-1:]  # one zone per top-level label: "test." for mx.acme.test
        return RR(
            rname=_text(apex) + "." if apex else ".",
            rtype=QTYPE.SOA,
            rclass=CLASS.IN,
            ttl=self.negative_ttl,
            rdata=SOA(
                "ns.mailsift.test.",
                "hostmaster.mailsift.test.",
                (1, 3600, 600, 86400, self.negative_ttl),
            ),
        )

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord | None:
        """The reply to ``request``; ``None`` means: send nothing (injected timeout)."""
        reply = request.reply(ra=0, aa=1)
        if request.header.opcode != OPCODE.QUERY:
            reply.header.aa = 0
            reply.header.rcode = RCODE.NOTIMP
            return reply
        if len(request.questions) != 1:
            reply.header.aa = 0
            reply.header.rcode = RCODE.FORMERR
            return reply
        question = request.q
        key = tuple(label.lower() for label in question.qname.label)
        with self._lock:
            failure = self._failures.get(key)
            records = list(self._records.get(key, ()))
            exists = key in _ALWAYS_EXIST or key in self._names
            global_failure, wildcard_ip = self._global_failure, self._wildcard_ip
        if global_failure == "nxdomain":
            # A lying resolver: "no such name" for everything, the root included.
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self._soa(key))
            return reply
        if global_failure in ("servfail", "timeout"):
            failure = global_failure
        if global_failure == "wildcard" and not exists:
            # NXDOMAIN rewriting: a name that does not exist "exists" and has an address.
            exists = True
            if question.qtype in (QTYPE.A, QTYPE.ANY):
                records = [(QTYPE.A, A(wildcard_ip), 60)]
        if failure == "timeout":
            return None
        if failure == "truncated_empty":
            # Over UDP: truncated (TC), so the client asks again over TCP (RFC 7766);
            # over TCP (the serving loop clears TC): NOERROR, no answer and no SOA --
            # what a middlebox that mangles DNS over TCP hands back. Not a "no data".
            reply.header.tc = 1
            return reply
        if failure == "servfail":
            reply.header.aa = 0
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if question.qclass not in (CLASS.IN, _CLASS_ANY):
            reply.header.aa = 0
            reply.header.rcode = RCODE.REFUSED
            return reply
        matches = [r for r in records if question.qtype in (r[0], QTYPE.ANY)]
        for qtype, rdata, ttl in matches:
            reply.add_answer(RR(question.qname, qtype, CLASS.IN, ttl, rdata))
        if not matches:
            if not exists:
                reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self._soa(key))
        return reply


class DnsServer:
    """Authoritative DNS on loopback, UDP and TCP on the same port, in its own thread.

    ::

        with DnsServer() as dns_server:
            dns_server.add_mx("acme.test", [(10, "mx1.acme.test"), (20, "mx2.acme.test")])
            dns_server.add_a("mx1.acme.test", "127.0.0.5")
            settings = Settings(dns_nameservers=[dns_server.nameserver])

    Names are case-insensitive and may be given in Unicode (IDNA-encoded here).
    Records may be added while the server runs, from any thread.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, negative_ttl: int = 300) -> None:
        self.host = str(ipaddress.ip_address(host))
        self.port = port
        self.queries: list[tuple[str, str]] = []
        #: Name (as in :attr:`queries`) -> seconds its UDP answers are held back: a slow
        #: upstream behind the resolver.
        self.delays: dict[str, float] = {}
        self._zone = _ZoneResolver(negative_ttl)
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- zone API ---------------------------------------------------------------------

    @property
    def nameserver(self) -> str:
        """``ip:port`` (``[ip]:port`` for IPv6), for ``MAILSIFT_DNS_NAMESERVERS``."""
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def add_mx(self, domain: str, exchanges: Sequence[tuple[int, str]], ttl: int = 300) -> None:
        """Add MX records ``(preference, exchange)`` to ``domain`` (RFC 1035 3.3.9)."""
        key = _key(domain)
        if not exchanges:
            self._zone.add_name(key)
        for preference, exchange in exchanges:
            if not 0 <= int(preference) <= 65535:
                raise ValueError(f"MX preference {preference} out of range")
            target = _text(_key(exchange))
            target = "." if target == "." else target + "."
            self._zone.add(key, QTYPE.MX, MX(target, int(preference)), ttl)

    def add_null_mx(self, domain: str, ttl: int = 300) -> None:
        """Publish a null MX, ``MX 0 .``: the domain accepts no mail (RFC 7505)."""
        self._zone.add(_key(domain), QTYPE.MX, MX(".", 0), ttl)

    def add_a(self, name: str, ip: str, ttl: int = 300) -> None:
        address = ipaddress.ip_address(ip)
        if address.version != 4:
            raise ValueError(f"{ip!r} is not an IPv4 address (use add_aaaa)")
        self._zone.add(_key(name), QTYPE.A, A(str(address)), ttl)

    def add_aaaa(self, name: str, ip: str, ttl: int = 300) -> None:
        address = ipaddress.ip_address(ip)
        if address.version != 6:
            raise ValueError(f"{ip!r} is not an IPv6 address (use add_a)")
        self._zone.add(_key(name), QTYPE.AAAA, AAAA(str(address)), ttl)

    def add_txt(self, name: str, text: str, ttl: int = 300) -> None:
        """Add a TXT record (e.g. an SPF policy); the name then exists without mail records."""
        self._zone.add(_key(name), QTYPE.TXT, TXT(text.encode("utf-8")), ttl)

    def add_ptr(self, ip: str, name: str, ttl: int = 300) -> None:
        """Publish ``name`` as the reverse DNS of ``ip``: a PTR record at
        ``4.3.2.1.in-addr.arpa`` (RFC 1035 3.5) or the nibbles under ``ip6.arpa``
        (RFC 3596 2.5). Several calls give several PTR records."""
        reverse = dns.reversename.from_address(str(ipaddress.ip_address(ip)))
        target = _text(_key(name))
        self._zone.add(_key(reverse.to_text()), QTYPE.PTR, PTR(target + "."), ttl)

    def add_name(self, name: str) -> None:
        """Make ``name`` exist with no records: queries get NOERROR and no data."""
        self._zone.add_name(_key(name))

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Drop the ``rtype`` records of ``name`` (all of them, and the name, if ``None``)."""
        self._zone.remove(_key(name), None if rtype is None else getattr(QTYPE, rtype.upper()))

    def set_failure(self, name: str, mode: FailureMode | None) -> None:
        """Make every query for exactly ``name`` fail: ``"servfail"`` answers SERVFAIL,
        ``"timeout"`` sends no reply at all, ``"truncated_empty"`` truncates over UDP and
        answers an empty NOERROR without SOA over TCP. ``None`` clears the failure."""
        if mode not in ("servfail", "timeout", "truncated_empty", None):
            raise ValueError(f"unknown failure mode {mode!r}")
        self._zone.set_failure(_key(name), mode)

    def set_global_failure(
        self, mode: GlobalFailureMode | None, *, wildcard_ip: str = "127.0.0.1"
    ) -> None:
        """Make the whole server misbehave like a broken resolver, whatever the name
        (per-name :meth:`set_failure` is overridden while this is on):

        - ``"nxdomain"``: every query, the root included, gets ``NXDOMAIN`` -- a resolver
          that lies (captive portals before login, DNS filtering, broken sandboxes; issue 8
          saw it on a first try with real addresses);
        - ``"servfail"``: every query gets ``SERVFAIL`` (a resolver with no upstream);
        - ``"timeout"``: no query is answered at all;
        - ``"wildcard"``: names that exist answer as usual, every name that does not
          exist gets ``NOERROR`` and, asked for A, the address ``wildcard_ip`` -- the
          NXDOMAIN rewriting of ISP "search helper" resolvers and captive portals
          (ICANN SSAC, SAC 032 "Preliminary Report on DNS Response Modification", 2008;
          Verisign's Site Finder wildcard under .com/.net, 2003);
        - ``None``: back to normal.

        Tests use it for the resolver-sanity checks of the verifier and of
        ``mailsift doctor``.
        """
        if mode not in ("nxdomain", "servfail", "timeout", "wildcard", None):
            raise ValueError(f"unknown global failure mode {mode!r}")
        if ipaddress.ip_address(wildcard_ip).version != 4:
            raise ValueError(f"{wildcard_ip!r} is not an IPv4 address")
        self._zone.set_global_failure(mode, str(ipaddress.ip_address(wildcard_ip)))

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            return self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._udp, self._tcp = self._bind(family)
        self.port = self._udp.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._udp, self._tcp, self._wake_r):
            sock.setblocking(False)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"mailsift-dns-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def _bind(self, family: int) -> tuple[socket.socket, socket.socket]:
        """UDP and TCP sockets on the same port; ``port=0`` picks a free one for both."""
        last_error: OSError | None = None
        for _ in range(1 if self.port else 50):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                udp.bind((self.host, self.port))
                tcp.bind((self.host, udp.getsockname()[1]))
                tcp.listen(64)
                return udp, tcp
            except OSError as exc:
                udp.close()
                tcp.close()
                last_error = exc
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """Stop serving and close every socket; returns within milliseconds."""
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
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = self._wake_r = self._wake_w = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"<DnsServer {self.nameserver} {state}>"

    # -- the serving thread -----------------------------------------------------------

    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None and self._wake_r is not None
        selector = selectors.DefaultSelector()
        selector.register(self._udp, selectors.EVENT_READ, "udp")
        selector.register(self._tcp, selectors.EVENT_READ, "accept")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        buffers: dict[socket.socket, bytearray] = {}
        try:
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if self._stopping.is_set():
                        break
                    kind = key.data
                    if kind == "udp":
                        self._serve_udp()
                    elif kind == "accept":
                        self._accept(selector, buffers)
                    elif kind == "tcp":
                        self._serve_tcp(key.fileobj, selector, buffers)  # type: ignore[arg-type]
        finally:
            for conn in list(buffers):
                conn.close()
            selector.close()

    def _serve_udp(self) -> None:
        assert self._udp is not None
        try:
            data, peer = self._udp.recvfrom(65535)
        except OSError:  # BlockingIOError, or an ICMP error surfacing on some platforms
            return
        reply = self._answer(data)
        if reply is None:
            return
        record, request = reply
        limit = _UDP_PLAIN_LIMIT
        if request is not None:
            for extra in request.ar:
                if extra.rtype == QTYPE.OPT:
                    limit = max(_UDP_PLAIN_LIMIT, min(int(extra.rclass), _EDNS_PAYLOAD))
                    record.add_ar(EDNS0(udp_len=_EDNS_PAYLOAD))
                    break
        packed = record.pack()
        if len(packed) > limit:  # RFC 1035 4.2.1 / RFC 7766: client retries over TCP
            truncated = record.truncate()
            truncated.questions = list(record.questions)
            truncated.set_header_qa()
            packed = truncated.pack()
        delay = self.delays.get(_text(tuple(label.lower() for label in record.q.qname.label)))
        if delay:  # a slow upstream: the answer leaves later, the server goes on
            timer = threading.Timer(delay, self._send_udp, (packed, peer))
            timer.daemon = True
            timer.start()
            return
        self._send_udp(packed, peer)

    def _send_udp(self, packed: bytes, peer: object) -> None:
        udp = self._udp
        if udp is None:
            return
        try:
            udp.sendto(packed, peer)
        except OSError:
            pass

    def _accept(self, selector: selectors.BaseSelector, buffers: dict) -> None:
        assert self._tcp is not None
        try:
            conn, _ = self._tcp.accept()
        except OSError:
            return
        conn.setblocking(False)
        buffers[conn] = bytearray()
        selector.register(conn, selectors.EVENT_READ, "tcp")

    def _serve_tcp(
        self, conn: socket.socket, selector: selectors.BaseSelector, buffers: dict
    ) -> None:
        """RFC 7766: two-octet length prefix, several queries per connection allowed."""
        try:
            data = conn.recv(65535)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn, selector, buffers)
            return
        buffer = buffers[conn]
        buffer += data
        while len(buffer) >= 2:
            (length,) = struct.unpack("!H", buffer[:2])
            if len(buffer) < 2 + length:
                break
            message = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            reply = self._answer(message)
            if reply is None:
                continue
            reply[0].header.tc = 0  # TCP is never truncated
            packed = reply[0].pack()[:_MAX_TCP_MESSAGE]
            try:
                conn.settimeout(1.0)
                conn.sendall(struct.pack("!H", len(packed)) + packed)
                conn.setblocking(False)
            except OSError:
                self._close(conn, selector, buffers)
                return

    @staticmethod
    def _close(conn: socket.socket, selector: selectors.BaseSelector, buffers: dict) -> None:
        try:
            selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        buffers.pop(conn, None)
        conn.close()

    def _answer(self, data: bytes) -> tuple[DNSRecord, DNSRecord | None] | None:
        """Parse, record and answer one message; ``None`` means send nothing."""
        try:
            request = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 -- garbage from the wire must not stop the server
            if len(data) < 12:
                return None
            (query_id,) = struct.unpack("!H", data[:2])
            formerr = DNSRecord()
            formerr.header.id = query_id
            formerr.header.qr = 1
            formerr.header.rcode = RCODE.FORMERR
            return formerr, None
        if request.header.qr:  # a response sent to us: never answer it
            return None
        for question in request.questions:
            key = tuple(label.lower() for label in question.qname.label)
            self.queries.append((_text(key), _qtype_text(question.qtype)))
        try:
            reply = self._zone.resolve(request, None)
        except Exception:  # noqa: BLE001 -- answer SERVFAIL like a real server would
            reply = request.reply(ra=0, aa=0)
            reply.header.rcode = RCODE.SERVFAIL
        if reply is None:
            return None
        return reply, request

"""Settings: flags, then ``MAILSIFT_*`` environment variables, then these defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["BackendName", "Nameserver", "Settings", "db_location", "is_database_url", "is_helo_name"]

#: URL schemes MAILSIFT_DB takes besides a DuckDB file path (a shared PostgreSQL warehouse).
DATABASE_URL_SCHEMES: tuple[str, ...] = ("postgresql", "postgres")


def is_database_url(value: object) -> bool:
    """True for a PostgreSQL URL (``postgresql://``, ``postgres://``, ``postgresql+driver://``)."""
    if not isinstance(value, str):
        return False
    scheme, sep, _ = value.strip().partition("://")
    return bool(sep) and scheme.split("+", 1)[0].lower() in DATABASE_URL_SCHEMES


def db_location(value: str | Path) -> str | Path:
    """MAILSIFT_DB (or ``--db``) as the warehouse takes it: a database URL stays text (a
    ``Path`` would fold its ``//``), anything else is a file ``Path``.

    Raises ``ValueError`` (its message shows the URL without its password) for a URL that
    cannot be a PostgreSQL URL: a bad port or host, or ``postgresql:`` without ``//``
    (which would otherwise become a DuckDB file of that name)."""
    if isinstance(value, str) and is_database_url(value):
        url = value.strip()
        _check_database_url(url)
        return url
    if isinstance(value, str) and _URLISH.match(value.strip()):
        raise ValueError(f"{_shown(value.strip())}: not a PostgreSQL URL "
                         "(postgresql://user@host:5432/database) nor a DuckDB file name")
    return Path(value)


#: ``postgres:``/``postgresql:``/``postgresql+driver:`` not followed by ``//``.
_URLISH = re.compile(r"^postgres(ql)?(\+[\w.-]+)?:(?!//)", re.IGNORECASE)


def _shown(url: str) -> str:
    """``url`` for a message: its password masked; if it does not parse as a URL with a
    host part, nothing before its last ``@``."""
    from urllib.parse import urlsplit

    from mailsift.urlsecrets import redact

    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        netloc = ""
    if "@" in url and "@" not in netloc:
        return "<redacted>@" + url.rsplit("@", 1)[1]
    return redact(url)


def _check_database_url(url: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not 0-65535
        parts.hostname  # noqa: B018
    except ValueError as exc:
        raise ValueError(f"{_shown(url)}: not a valid PostgreSQL URL ({exc}); "
                         "expected postgresql://user@host:5432/database") from None
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValueError(f"{_shown(url)}: not a valid PostgreSQL URL (it holds spaces or "
                         "control characters)")

#: The verification backends by name: the one list (CLI choices, flow parameters, settings).
BackendName = Literal["local", "api", "sandbox"]


class Nameserver(tuple):
    """``(ip, port)``; parsed from ``ip`` or ``ip:port`` (``[v6]:port`` for IPv6)."""

    __slots__ = ()

    def __new__(cls, ip: str, port: int = 53) -> Nameserver:
        return super().__new__(cls, (ip, port))

    @property
    def ip(self) -> str:
        return self[0]

    @property
    def port(self) -> int:
        return self[1]

    @classmethod
    def parse(cls, text: str) -> Nameserver:
        import ipaddress

        text = text.strip()
        host, port = text, 53
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest.startswith(":"):
                port = int(rest[1:])
        elif text.count(":") == 1:
            host, _, p = text.partition(":")
            port = int(p)
        ipaddress.ip_address(host)  # raises ValueError on a name or garbage
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        return cls(host, port)


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def is_helo_name(value: str) -> bool:
    """A name EHLO can carry: an LDH hostname of at most 255 characters, or an address
    literal ``[192.0.2.1]`` / ``[IPv6:2001:db8::1]`` (RFC 5321 section 4.1.3)."""
    import ipaddress

    if not value or len(value) > 255 or not value.isascii():
        return False
    if value.startswith("[") and value.endswith("]"):
        literal = value[1:-1]
        literal = literal[5:] if literal.lower().startswith("ipv6:") else literal
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            return False
        return True
    return all(_LABEL.match(label) for label in value.removesuffix(".").split("."))


class Settings(BaseSettings):
    """Everything that touches the network is configurable, so tests can point it at
    the simulated internet (``mailsift.testing``)."""

    # hide_input_in_errors: a bad value (MAILSIFT_DB's URL with its password) is never
    # repeated in a validation error's text
    model_config = SettingsConfigDict(
        env_prefix="MAILSIFT_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # DNS
    dns_nameservers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma list of ip or ip:port; empty means the system resolver (/etc/resolv.conf).",
    )
    dns_timeout: float = Field(5.0, gt=0, description="Seconds for one DNS lookup, all tries.")
    dns_sanity_check: bool = Field(
        True,
        description="Believe 'no such domain' / 'no MX' only from a resolver that passes a "
        "health check (the root and TLD resolve, a made-up name is NXDOMAIN).",
    )

    # SMTP probe
    smtp_enabled: bool = True
    smtp_port: int = Field(25, gt=0, lt=65536)
    smtp_timeout: float = Field(10.0, gt=0, description="Seconds for each SMTP step.")
    helo_hostname: str = Field("mailsift.localhost", description="Name sent in EHLO/HELO.")
    mail_from: str = Field("verify@mailsift.localhost", description="Envelope sender for probes.")
    smtp_starttls: bool = True
    max_rcpt_per_connection: int = Field(
        200,
        gt=0,
        description="RCPT commands one SMTP session sends at most, over its transactions "
        "(100 recipients each, RFC 5321 4.5.3.1.8).",
    )
    source_address: str | None = Field(
        None,
        description="Bind SMTP connections to this local IP (a probe host's own egress "
        "address; remote servers count their per-IP limits on it). Default: the OS's choice.",
    )
    domain_limit_across_hosts: int | None = Field(
        None,
        gt=0,
        description="SMTP connections to one domain from all probe hosts together (a Prefect "
        "global concurrency limit per domain, taken by each verify batch); default: no total.",
    )
    allow_private_networks: bool = Field(
        False,
        description="Let the SMTP probe connect to loopback, private, link-local and other "
        "non-public addresses that MX/A records point at (off: such domains are "
        "invalid/mx_unroutable and nothing is connected to).",
    )
    smtp_reconnect_delay: float = Field(
        1.0,
        ge=0,
        description="Seconds to wait before a fresh session to a server that answered some "
        "recipients and then hung up (an error or recipient limit per session).",
    )
    concurrency: int = Field(
        100,
        gt=0,
        description="SMTP connections open at once, in all (Postfix's default_process_limit "
        "is 100); also bounds the domains whose DNS is looked up at once (25 at most).",
    )
    per_domain_concurrency: int = Field(
        2, gt=0, description="SMTP connections a domain starts with; its window grows from here."
    )
    max_per_domain_concurrency: int = Field(
        20,
        gt=0,
        le=20,
        description="Ceiling of a domain's connection window unless data/providers.json names "
        "a lower one (Postfix's default_destination_concurrency_limit is 20).",
    )
    smtp_domain_budget: float = Field(
        300.0,
        gt=0,
        description="Seconds one domain may take over all its MX hosts and sessions; "
        "addresses still unanswered then are unknown (smtp_timeout).",
    )
    smtp_slow_after: float = Field(
        3.0,
        gt=0,
        description="Seconds without a reply after which a session counts as slow: it moves "
        "to the slow share of the connection slots, and its domain stays at one connection.",
    )
    smtp_slow_share: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Share of the concurrency that slow domains (tarpits) may hold at once.",
    )
    catch_all_check: bool = True

    # Syntax
    allow_test_domains: bool = Field(
        False, description="Accept RFC 6761 special-use domains (.test, localhost): tests and demos."
    )

    # Backend selection
    backend: BackendName = "local"
    api_url: str | None = None
    api_key: SecretStr | None = None
    api_key_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the API key (instead of api_key)."
    )
    api_timeout: float = Field(10.0, gt=0)
    api_rate_limit: int = Field(60, gt=0, description="Requests per minute to the API.")
    api_concurrency: int = Field(5, gt=0)
    api_retries: int = Field(3, ge=1)

    # Warehouse
    db: Path | str = Field(
        Path("mailsift.duckdb"),
        description="The warehouse: a DuckDB file, or a postgresql:// URL shared by several hosts.",
    )

    # mailsift doctor (checks of this host's own mail path)
    egress_ip: str | None = Field(
        None, description="This host's public IP for mail; default: learnt from MX EHLO replies."
    )
    dnsbl_zones: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"],
        description="Comma list of IP blocklist zones (RFC 5782) mailsift doctor checks.",
    )
    doctor_mx_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["gmail.com", "outlook.com", "yahoo.com"],
        description="Comma list of domains whose first MX host doctor tests port 25 against.",
    )

    # Sources (per source; the defaults are far above any real CRM export)
    max_source_bytes: int = Field(
        20_000_000_000, gt=0, description="Bytes per source (a download counted after decompression)."
    )
    max_source_rows: int = Field(100_000_000, gt=0, description="Data rows per source.")
    download_timeout: float = Field(900.0, gt=0, description="Seconds for a whole URL download.")
    download_stall_timeout: float = Field(
        30.0, gt=0, description="Seconds a download may wait for the next bytes (and to connect)."
    )

    @field_validator("db", mode="before")
    @classmethod
    def _db_location(cls, value: object) -> object:
        return db_location(value) if isinstance(value, str | Path) else value

    @field_validator("dns_nameservers", mode="before")
    @classmethod
    def _split_nameservers(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("dnsbl_zones", "doctor_mx_domains", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().rstrip(".").lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("egress_ip", "source_address")
    @classmethod
    def _check_ip(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        import ipaddress

        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(f"not an IP address: {value[:60]!r}") from None

    @field_validator("dns_nameservers")
    @classmethod
    def _check_nameservers(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                Nameserver.parse(item)
            except ValueError as exc:
                raise ValueError(f"bad nameserver {item!r}: use ip or ip:port ({exc})") from None
        return value

    @field_validator("helo_hostname", "mail_from")
    @classmethod
    def _no_control_chars(cls, value: str) -> str:
        if any(ord(c) < 32 or ord(c) == 127 for c in value) or " " in value:
            raise ValueError("must not contain spaces or control characters")
        return value

    @field_validator("helo_hostname")
    @classmethod
    def _check_helo(cls, value: str) -> str:
        """RFC 5321 section 4.1.1.1: EHLO takes a domain (or an address literal), and a
        domain is at most 255 octets of LDH labels (RFC 1035 section 2.3.4, RFC 1123)."""
        if not is_helo_name(value):
            raise ValueError(
                f"{value[:60]!r}{'...' if len(value) > 60 else ''} is not a hostname: ASCII letters, "
                "digits and hyphens in dot-separated labels of 1-63, at most 255 in all (or [ip])"
            )
        return value

    @field_validator("mail_from")
    @classmethod
    def _check_mail_from(cls, value: str) -> str:
        """MAIL FROM takes a mailbox (RFC 5321 section 4.1.2): anything else makes every
        probe fail at MAIL, so it is refused here."""
        from mailsift.syntax import parse_address

        if not value or not hasattr(parse_address(value, allow_test_domains=True), "domain"):
            raise ValueError(f"{value[:60]!r} is not an email address (the probes' envelope sender)")
        return value

    @property
    def nameservers(self) -> list[Nameserver]:
        return [Nameserver.parse(item) for item in self.dns_nameservers]

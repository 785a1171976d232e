"""Keep credentials out of stored URLs.

A webhook URL may carry a password (``https://user:pw@host/``) or a token in its query
(``?token=...``). Those parts are replaced before the URL is stored. A secret that is the
path itself (Slack-style ``/services/T000/B000/XXXX``) cannot be told apart from an
ordinary path; keep such URLs in settings and send secrets in headers instead.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mailsift.urlsecrets import SECRET_KEY

__all__ = ["REDACTED", "redact_url"]

REDACTED = "REDACTED"

_SECRET_KEY = SECRET_KEY  # one definition of a secret-looking query key, the engine's


def redact_url(url: str) -> str:
    """``url`` without user info and with secret-looking query values replaced by
    :data:`REDACTED`; a string that does not parse as a URL is returned unchanged."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = host if port is None else f"{host}:{port}"
        if ":" in host:  # IPv6 literal
            netloc = f"[{host}]" + ("" if port is None else f":{port}")
        netloc = f"{REDACTED}@{netloc}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_KEY.search(key) for key, _ in pairs):
            query = urlencode(
                [(k, REDACTED if _SECRET_KEY.search(k) else v) for k, v in pairs], safe="/:"
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

"""Credentials in URLs, passed by reference so that they never reach Prefect.

A CRM export URL or a webhook URL often carries a secret: ``https://user:pw@host/...``
or ``...?api_key=...``. A flow parameter is stored by Prefect (its database, the UI, the
events), so such a URL must never become one. Instead the URL names where the secret is:

* ``${NAME}``: the environment variable ``NAME`` of the process that runs the flow;
* ``${secret:block-name}``: a Prefect Secret block (resolved by the pipeline's tasks;
  the engine itself never imports Prefect).

For example ``https://crm.example/export.csv?api_key=${CRM_API_KEY}``. The CLI does it
for you: :func:`by_reference` moves an inline password or secret-looking query value into
an environment variable of its own process (``MAILSIFT_URL_SECRET_1`` ...) and passes the
reference on; a flow parameter that still holds an inline secret is refused
(:func:`check_no_inline_secret`), with the URL redacted (:func:`redact`).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from mailsift.errors import ConfigError

__all__ = [
    "SECRET_KEY",
    "by_reference",
    "check_no_inline_secret",
    "expand",
    "has_inline_secret",
    "redact",
]

#: Query parameter names whose values are secrets (also used by the warehouse).
SECRET_KEY = re.compile(
    r"token|key|secret|sig|signature|pass|auth|credential|session", re.IGNORECASE
)
_REFERENCE = re.compile(r"\$\{(secret:)?([A-Za-z0-9_.:/-]+)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_counter = itertools.count(1)


def _is_reference(value: str) -> bool:
    return bool(_REFERENCE.fullmatch(value))


def _parts(url: str):  # -> SplitResult | None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    return parts


def has_inline_secret(url: str) -> bool:
    """True when ``url`` holds a password or a secret-looking query value in clear."""
    parts = _parts(url)
    if parts is None:
        return "@" in url  # unparsable: assume the worst when it could hold userinfo
    if parts.password and not _is_reference(parts.password):
        return True
    return any(
        SECRET_KEY.search(k) and v and not _is_reference(v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )


def redact(url: str, mark: str = "***") -> str:
    """``url`` for messages: an inline password and secret-looking query values become
    ``mark`` (references ``${...}`` are kept: they are names, not secrets). A string
    that does not parse keeps only what follows its last ``@``."""
    parts = _parts(url)
    if parts is None:
        return ("<redacted>@" + url.rsplit("@", 1)[1]) if "@" in url else url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, password = userinfo.partition(":")
        if has_password:
            password = password if _is_reference(password) else mark
            netloc = f"{user}:{password}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_KEY.search(k) for k, _ in pairs):
            query = urlencode(
                [(k, mark if SECRET_KEY.search(k) and not _is_reference(v) else v) for k, v in pairs],
                safe="*/:${}",
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def by_reference(url: str, environ: dict[str, str] | None = None) -> str:
    """Move inline secrets of ``url`` into fresh environment variables of this process
    (``MAILSIFT_URL_SECRET_<n>``) and return the URL naming them. A URL without inline
    secrets is returned unchanged."""
    if not has_inline_secret(url):
        return url
    env = os.environ if environ is None else environ
    parts = _parts(url)
    if parts is None:
        raise ConfigError(f"{redact(url)}: not a valid URL")

    def stash(value: str) -> str:
        name = f"MAILSIFT_URL_SECRET_{next(_counter)}"
        env[name] = value
        return "${" + name + "}"

    netloc = parts.netloc
    if parts.password and not _is_reference(parts.password):
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        from urllib.parse import unquote

        netloc = f"{user}:{stash(unquote(parts.password))}@{hostport}"
    query = parts.query
    if query:
        pairs = [
            (k, stash(v) if SECRET_KEY.search(k) and v and not _is_reference(v) else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="/:${}")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def check_no_inline_secret(url: str, what: str) -> None:
    """Refuse (one line, redacted) a URL that would put a secret into Prefect."""
    if has_inline_secret(url):
        raise ConfigError(
            f"{what} {redact(url)} holds a credential in clear; pass it by reference: "
            "${ENV_VAR} (an environment variable of the worker) or ${secret:block-name} "
            "(a Prefect Secret block), e.g. ?api_key=${CRM_API_KEY}"
        )


def expand(url: str, resolve_block: Callable[[str], str] | None = None) -> str:
    """``url`` with its references replaced by the secrets they name (percent-encoded
    where they land). An unset variable or a block that cannot be read is a
    :class:`ConfigError` naming it (never its value)."""

    def one(match: re.Match[str]) -> str:
        is_block, name = match.group(1), match.group(2)
        if is_block:
            if resolve_block is None:
                raise ConfigError(f"{redact(url)}: Prefect Secret block {name!r} cannot be read here")
            value = resolve_block(name)
        else:
            if not _ENV_NAME.match(name):
                raise ConfigError(f"{redact(url)}: ${{{name}}} is not an environment variable name")
            value = os.environ.get(name)
            if value is None:
                raise ConfigError(f"{redact(url)}: environment variable {name} is not set")
        return quote(value, safe="")

    return _REFERENCE.sub(one, url) if "${" in url else url

"""Reputation signals: layer 4 of the engine. Pure functions over data files, no network.

* :func:`is_disposable` -- the maintained ``disposable-email-domains`` list (PyPI), with
  parent domains matching (``x.mailinator.com``) and its allowlist winning.
* :func:`is_role_account` -- role mailboxes (RFC 2142 names and common functions),
  ``mailsift/data/role_accounts.txt``.
* :func:`is_free_provider` -- consumer mailbox providers, ``data/free_providers.txt``.
* :func:`provider_from_mx` / :func:`provider_rule` -- who runs the MX hosts and how that
  provider answers RCPT, ``data/providers.json`` (rules are data, not code).
* :func:`suggest_domain` -- a candidate correction for a mistyped domain,
  ``data/typo_domains.json``. Only a candidate: the verifier offers it when the typed
  domain does not take mail.

Every function takes what the syntax layer produces (A-label, lower-case domains; local
parts as typed) but also copes with upper case, a trailing dot or U-labels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any

import disposable_email_domains
import idna

__all__ = [
    "ProviderRule",
    "default_max_concurrency",
    "is_disposable",
    "is_free_provider",
    "is_role_account",
    "known_providers",
    "load",
    "provider_from_mx",
    "provider_rule",
    "suggest_domain",
]

_DATA = "mailsift.data"
_ROLE_SEPARATORS = re.compile(r"[.\-_]")


@dataclass(frozen=True, slots=True)
class ProviderRule:
    """How a mailbox provider behaves towards an RCPT probe.

    ``accepts_all``: the provider answers 250 for mailboxes that do not exist, so a 250
    proves nothing (the verifier reports ``risky`` / ``catch_all``). ``notes`` is
    documentation only and does not take part in equality.
    """

    accepts_all: bool = False
    notes: str = field(default="", compare=False)
    #: SMTP connections at once that the provider's MX hosts take from one client
    #: (the ceiling of the engine's adaptive window); ``None``: the data's default.
    max_concurrency: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class _Provider:
    name: str
    suffixes: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]
    rule: ProviderRule


# --- data loading (once, lazily) --------------------------------------------------------


def _read_text(name: str) -> str:
    return resources.files(_DATA).joinpath(name).read_text(encoding="utf-8")


def _read_list(name: str) -> list[str]:
    items = []
    for line in _read_text(name).splitlines():
        item = line.split("#", 1)[0].strip()
        if item:
            items.append(item)
    return items


@lru_cache(maxsize=1)
def _role_accounts() -> frozenset[str]:
    return frozenset(_role_key(item) for item in _read_list("role_accounts.txt"))


@lru_cache(maxsize=1)
def _free_providers() -> frozenset[str]:
    return frozenset(item.lower() for item in _read_list("free_providers.txt"))


def _positive(value: object) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


@lru_cache(maxsize=1)
def default_max_concurrency() -> int | None:
    """``default_max_concurrency`` of ``data/providers.json``: the window ceiling of a
    domain no provider rule names (a company's own server)."""
    return _positive(json.loads(_read_text("providers.json")).get("default_max_concurrency"))


@lru_cache(maxsize=1)
def _providers() -> tuple[_Provider, ...]:
    data: dict[str, Any] = json.loads(_read_text("providers.json"))
    providers = []
    for name, spec in data["providers"].items():
        providers.append(
            _Provider(
                name=name,
                suffixes=tuple(s.lower().strip(".") for s in spec.get("mx_suffixes", ())),
                patterns=tuple(re.compile(p, re.IGNORECASE) for p in spec.get("mx_patterns", ())),
                rule=ProviderRule(
                    accepts_all=bool(spec.get("accepts_all", False)),
                    notes=str(spec.get("notes", "")),
                    max_concurrency=_positive(spec.get("max_concurrency")),
                ),
            )
        )
    return tuple(providers)


@lru_cache(maxsize=1)
def _rules() -> MappingProxyType[str, ProviderRule]:
    return MappingProxyType({p.name: p.rule for p in _providers()})


@dataclass(frozen=True, slots=True)
class _TypoData:
    popular: tuple[str, ...]
    typos: MappingProxyType[str, str]
    tld_typos: MappingProxyType[str, str]
    known: frozenset[str]


@lru_cache(maxsize=1)
def _typo_data() -> _TypoData:
    data: dict[str, Any] = json.loads(_read_text("typo_domains.json"))
    popular = tuple(d.lower() for d in data["popular"])
    return _TypoData(
        popular=popular,
        typos=MappingProxyType({k.lower(): v.lower() for k, v in data["typos"].items()}),
        tld_typos=MappingProxyType({k.lower(): v.lower() for k, v in data["tld_typos"].items()}),
        known=frozenset(popular) | _free_providers(),
    )


@lru_cache(maxsize=1)
def _disposable_lists() -> tuple[frozenset[str], frozenset[str]]:
    block = frozenset(d.lower() for d in disposable_email_domains.blocklist)
    allow = frozenset(d.lower() for d in getattr(disposable_email_domains, "allowlist", ()))
    return block, allow


def load() -> None:
    """Read every data file now (disposable lists, role accounts, free providers,
    provider rules, typo tables). They are otherwise read at first use, which in a
    verification is on its critical path (~30 ms); idempotent and thread-safe."""
    _disposable_lists()
    _role_accounts()
    _typo_data()  # and the free providers
    _rules()
    _providers()
    default_max_concurrency()


# --- helpers ----------------------------------------------------------------------------


def _norm_domain(domain: str) -> str:
    """Lower-case ASCII (A-label) form without a trailing dot; '' when hopeless."""
    if not isinstance(domain, str):
        return ""
    domain = domain.strip().rstrip(".").lower()
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            return ""
    return domain


def _role_key(local: str) -> str:
    return _ROLE_SEPARATORS.sub("", local.split("+", 1)[0].casefold())


# --- public API -------------------------------------------------------------------------


def is_disposable(domain: str) -> bool:
    """True when ``domain`` or one of its parent domains is a disposable-mail domain.

    The most specific listed name decides, so an allowlisted subdomain of a blocklisted
    domain is not disposable. A bare TLD never matches.
    """
    name = _norm_domain(domain)
    if not name:
        return False
    block, allow = _disposable_lists()
    labels = name.split(".")
    for i in range(len(labels) - 1):
        candidate = ".".join(labels[i:])
        if candidate in allow:
            return False
        if candidate in block:
            return True
    return False


def is_role_account(local: str) -> bool:
    """True for role mailboxes (``info``, ``sales``, ``no-reply``...; RFC 2142).

    Case-insensitive; a ``+tag`` is ignored and ``.``, ``-``, ``_`` do not count, so
    ``No.Reply+x`` is the role ``noreply``. Only the whole local part matches
    (``info.jane`` is a person).
    """
    if not isinstance(local, str) or not local:
        return False
    key = _role_key(local)
    return bool(key) and key in _role_accounts()


def is_free_provider(domain: str) -> bool:
    """True when ``domain`` is a free or consumer (ISP) mailbox provider (exact match)."""
    name = _norm_domain(domain)
    return bool(name) and name in _free_providers()


@lru_cache(maxsize=4096)
def _provider_of_host(host: str) -> str | None:
    host = _norm_domain(host)
    if not host:
        return None
    best: tuple[int, str] | None = None
    for provider in _providers():
        for suffix in provider.suffixes:
            matches = host == suffix or host.endswith("." + suffix)
            if matches and (best is None or len(suffix) > best[0]):
                best = (len(suffix), provider.name)
        if best is None and any(p.fullmatch(host) for p in provider.patterns):
            best = (0, provider.name)
    return best[1] if best else None


def provider_from_mx(mx_hosts: Sequence[str]) -> str:
    """The mailbox provider running ``mx_hosts`` (given in preference order).

    The most-preferred host that matches a rule of ``data/providers.json`` decides;
    ``'other'`` when none does (or there are no hosts).
    """
    if isinstance(mx_hosts, str):
        mx_hosts = (mx_hosts,)
    for host in mx_hosts or ():
        name = _provider_of_host(host)
        if name:
            return name
    return "other"


def provider_rule(provider: str) -> ProviderRule:
    """The behaviour rule of ``provider`` (a name from :func:`provider_from_mx`).

    Unknown providers and ``'other'`` get the default ``ProviderRule()``.
    """
    return _rules().get(provider, ProviderRule())


def known_providers() -> tuple[str, ...]:
    """Every provider name :func:`provider_from_mx` can return, ``'other'`` last."""
    return (*(p.name for p in _providers()), "other")


def _distance(a: str, b: str, limit: int) -> int:
    """Damerau-Levenshtein distance (optimal string alignment), capped at ``limit + 1``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def _nearest_popular(domain: str) -> str | None:
    best: tuple[int, str] | None = None
    for candidate in _typo_data().popular:
        if len(candidate.split(".", 1)[0]) <= 3:  # qq.com, me.com: too many near misses
            continue
        limit = 2 if len(candidate) >= 11 else 1
        d = _distance(domain, candidate, limit)
        if d <= limit and (best is None or d < best[0]):
            best = (d, candidate)
    return best[1] if best else None


@lru_cache(maxsize=4096)
def _suggest(domain: str) -> str | None:
    data = _typo_data()
    if domain in data.known:
        return None
    if domain in data.typos:
        return data.typos[domain]
    stem, dot, tld = domain.rpartition(".")
    fixed = f"{stem}.{data.tld_typos[tld]}" if dot and tld in data.tld_typos else domain
    if fixed in data.known:
        return fixed
    if fixed in data.typos:
        return data.typos[fixed]
    nearest = _nearest_popular(fixed)
    if nearest:
        return nearest
    return fixed if fixed != domain else None


def suggest_domain(domain: str) -> str | None:
    """A likely intended domain for a mistyped one (``gmial.com`` -> ``gmail.com``).

    Sources, in order: known misspellings; a top-level label that is no TLD at all
    (``.con``, ``.cmo`` -> ``.com``, for any domain); Damerau-Levenshtein distance 1 (2
    for names of 11+ characters) from a popular mailbox domain. Never suggests anything
    for a popular or known free-provider domain, nor for the domain itself. Returns an
    A-label, lower-case domain, or None.
    """
    name = _norm_domain(domain)
    if not name:
        return None
    suggestion = _suggest(name)
    return suggestion if suggestion != name else None

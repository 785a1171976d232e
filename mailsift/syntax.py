"""Address syntax and normalization: layer 1 of the engine.

:func:`parse_address` turns any string into either an :class:`Address` (normalized,
safe to put on an SMTP command line) or a :class:`SyntaxProblem`. It never raises.

The grammar is RFC 5321 4.1.2 ``Mailbox`` with internationalized local parts (RFC 6531
3.3, RFC 6532) and IDNA 2008 domains (RFC 5890-5893, UTS #46 mapping), checked by
python-email-validator (``strict=True`` so the local-part limit is enforced), with these
decisions of our own, each on purpose:

* **Control characters are refused anywhere** (C0, DEL, C1: CR, LF, NUL, TAB inside...),
  so that nothing parsed here can inject a line into an SMTP conversation (RFC 5321
  2.3.8: lines end in CRLF and nothing else may carry CR or LF). Only spaces and tabs
  around the address are trimmed.
* **Quoted local parts** (``"john doe"@example.com``) and **IP-literal domains**
  (``john@[192.0.2.1]``) are refused although RFC 5321 allows them: almost no real
  mailbox uses them, a CRM field holding one is nearly always a paste error, and probing
  an arbitrary IP literal would make the prober an open port scanner.
* **Comments, folding whitespace and obsolete forms** of RFC 5322 (``(comment)a@b``,
  ``a . b@c``) are refused: they belong to message headers, not to SMTP envelopes
  (RFC 5321 4.1.2 has no CFWS).
* **Dotless (single-label) domains** (``john@localhost``, ``john@com``) are refused, even
  with ``allow_test_domains``: ICANN prohibits dotless gTLD mail (2013) and such a
  name means a different host on every network. A top-level label must end in a letter.
* **Lengths** (RFC 5321 4.5.3.1): local part at most 64 octets, the whole address (with
  the domain in A-label form) at most 254 octets (RFC 3696 errata 1690), both counted in
  UTF-8 as SMTPUTF8 transmits them (RFC 6531 3.3). Longer input is refused before any
  parsing work is spent on it.
* **Special-use domains** (``arpa``, ``invalid``, ``local`` RFC 6762, ``localhost``,
  ``onion`` RFC 7686, ``test`` RFC 6761, as python-email-validator lists them, plus
  ``alt`` RFC 9476) cannot carry deliverable mail and give reason ``special_use``,
  unless ``allow_test_domains`` (``MAILSIFT_ALLOW_TEST_DOMAINS``) is on, which the
  simulated internet (``*.test``) needs. ``example.com`` and friends are *not* special
  here (RFC 6761 6.5 asks software not to treat them so); DNS then finds their null MX.

Normalization: the domain becomes lower-case ASCII (A-labels, no trailing dot); the
local part keeps its case (RFC 5321 2.4: only the receiving host may fold it) and is put
in Unicode NFC (RFC 6532 3.1), which changes no ASCII local part.

Speed: lists are verified grouped by domain, so the domain half is validated once per
distinct domain (cached) and the local half on its own; an ASCII dot-atom local part
needs only a regular expression. ``tests/test_syntax.py`` checks with Hypothesis that
this split gives the verdict python-email-validator gives on the whole address.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import idna
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

__all__ = [
    "MAX_ADDRESS_OCTETS",
    "MAX_LOCAL_OCTETS",
    "SPECIAL_USE_DOMAINS",
    "Address",
    "SyntaxProblem",
    "is_special_use",
    "parse_address",
]

#: RFC 5321 4.5.3.1.3 with RFC 3696 errata 1690: 256 octets of path minus the brackets.
MAX_ADDRESS_OCTETS = 254
#: RFC 5321 4.5.3.1.1.
MAX_LOCAL_OCTETS = 64
#: Longest display form a :class:`SyntaxProblem` carries.
MAX_DISPLAY_CHARS = 320

#: Special-use names whose subdomains cannot take mail (see the module docstring).
SPECIAL_USE_DOMAINS: tuple[str, ...] = tuple(dict.fromkeys([*SPECIAL_USE_DOMAIN_NAMES, "alt"]))

# C0 controls, DEL and C1 controls (U+0080-U+009F, NEL included).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SPECIAL_USE_MESSAGE = "special-use"  # in python-email-validator's error text
# Stand-ins that pass every check, to validate one half of an address at a time.
_NEUTRAL_LOCAL = "a"
_NEUTRAL_DOMAIN = "a.com"
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")


@dataclass(frozen=True, slots=True)
class Address:
    """A syntactically valid, normalized address."""

    original: str  #: the input string
    email: str  #: ``local@domain`` with the A-label domain: what SMTP and storage use
    local: str  #: local part, case kept, NFC
    domain: str  #: ASCII A-label domain, lower-case, no trailing dot
    domain_unicode: str  #: U-label form of the domain, for display
    smtputf8: bool  #: the local part is non-ASCII, so RCPT needs SMTPUTF8 (RFC 6531)


@dataclass(frozen=True, slots=True)
class SyntaxProblem:
    """Why a string is not an address we will verify."""

    original: str  #: the input string (as given; ``str`` of non-string input)
    email: str  #: display form: control characters and lone surrogates -> U+FFFD, <= 320 chars
    reason: str  #: ``"syntax"`` or ``"special_use"`` (reason words of ``mailsift.result``)
    message: str  #: human readable


def is_special_use(domain: str) -> bool:
    """True when the ASCII ``domain`` is or is under a special-use name (``x.test``)."""
    domain = domain.lower().rstrip(".")
    return any(domain == name or domain.endswith("." + name) for name in SPECIAL_USE_DOMAINS)


def parse_address(raw: str, *, allow_test_domains: bool = False) -> Address | SyntaxProblem:
    """Parse and normalize one address; never raises.

    ``raw`` may be any string (lone surrogates, NUL, megabytes); ``bytes`` are decoded as
    UTF-8 (undecodable bytes make it invalid), ``None`` and NaN count as empty, any other
    object is refused. Surrounding spaces and tabs are trimmed. ``allow_test_domains``
    accepts special-use domains such as ``*.test`` (for the simulated internet).
    """
    try:
        return _parse(raw, allow_test_domains)
    except Exception as exc:  # noqa: BLE001 -- the contract: any input yields a value
        original = raw if isinstance(raw, str) else _safe_str(raw)
        return _problem(original, original, "syntax", f"internal error: {type(exc).__name__}")


def _parse(raw: object, allow_test_domains: bool) -> Address | SyntaxProblem:
    if isinstance(raw, str):
        original = raw
    elif isinstance(raw, (bytes, bytearray, memoryview)):
        original = bytes(raw).decode("utf-8", "surrogateescape")
    elif raw is None or (isinstance(raw, float) and math.isnan(raw)):
        original = ""
    else:
        text = _safe_str(raw)
        return _problem(text, text, "syntax", f"not a string ({type(raw).__name__})")

    text = original.strip(" \t")
    if not text:
        return _problem(original, text, "syntax", "empty address")
    if len(text) > MAX_ADDRESS_OCTETS:  # every character is at least one octet
        return _problem(
            original,
            text,
            "syntax",
            f"too long: {len(text)} characters, the limit is {MAX_ADDRESS_OCTETS} octets "
            "(RFC 5321 4.5.3.1.3)",
        )
    control = _CONTROL.search(text)
    if control:
        return _problem(
            original,
            text,
            "syntax",
            f"contains a control character (U+{ord(control.group()):04X}); "
            "CR, LF, NUL, TAB and the like are never allowed in an address",
        )
    if _SURROGATE.search(text):
        return _problem(original, text, "syntax", "not valid Unicode (lone surrogate)")

    raw_local, at, raw_domain = text.partition("@")
    if not at:
        return _problem(original, text, "syntax", _error_of(text) or "no @-sign")
    # The local part and the domain are checked apart (the domain once per domain, cached):
    # without quoted local parts the first @ is the separator, and each half gets every
    # check python-email-validator makes on a whole address.
    # An ASCII dot-atom (RFC 5322 3.2.3) is all the validator checks in that case.
    local_error = (
        None if _DOT_ATOM.match(raw_local) else _error_of(raw_local + "@" + _NEUTRAL_DOMAIN)
    )
    if local_error:
        return _problem(original, text, "syntax", local_error)
    domain = _check_domain(raw_domain)
    if isinstance(domain, str):
        return _problem(original, text, "syntax", domain)
    ascii_domain, unicode_domain = domain

    local = unicodedata.normalize("NFC", raw_local)  # RFC 6532 3.1; case kept
    local_octets = len(local.encode("utf-8"))
    if local_octets > MAX_LOCAL_OCTETS:
        return _problem(
            original,
            text,
            "syntax",
            f"the part before the @-sign is {local_octets} octets, the limit is "
            f"{MAX_LOCAL_OCTETS} (RFC 5321 4.5.3.1.1)",
        )
    email = f"{local}@{ascii_domain}"
    # as typed, with the A-label domain (what RCPT TO carries), with the U-label domain
    for form in (text, email, f"{local}@{unicode_domain}"):
        octets = len(form.encode("utf-8"))
        if octets > MAX_ADDRESS_OCTETS:
            return _problem(
                original,
                text,
                "syntax",
                f"the address is {octets} octets, the limit is {MAX_ADDRESS_OCTETS} "
                "(RFC 5321 4.5.3.1.3)",
            )
    if is_special_use(ascii_domain) and not allow_test_domains:
        return _problem(original, email, "special_use", _special_use_message())

    return Address(
        original=original,
        email=email,
        local=local,
        domain=ascii_domain,
        domain_unicode=unicode_domain,
        smtputf8=not local.isascii(),
    )


def _error_of(text: str) -> str | None:
    """python-email-validator's complaint about ``text``, or None."""
    try:
        _validate(text)
    except EmailNotValidError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=16384)
def _check_domain(domain: str) -> tuple[str, str] | str:
    """``(A-label form, U-label form)`` of a domain, or the error message.

    Special-use domains come back valid (the caller decides on them): the validator
    exempts only ``test``, so another special-use suffix is swapped for ``test``,
    validated, and swapped back.
    """
    try:
        info = _validate(_NEUTRAL_LOCAL + "@" + domain)
    except EmailNotValidError as exc:
        message = str(exc)
        if _SPECIAL_USE_MESSAGE not in message:
            return message
        swapped = _swap_special_suffix(domain)
        if swapped is None:
            return message
        stand_in, suffix = swapped
        try:
            info = _validate(_NEUTRAL_LOCAL + "@" + stand_in)
        except EmailNotValidError as exc2:
            return str(exc2)
        ascii_domain = info.ascii_domain[: -len("test")] + suffix
        unicode_domain = info.domain[: -len("test")] + suffix
    else:
        ascii_domain, unicode_domain = info.ascii_domain, info.domain
    if "." not in ascii_domain:  # the validator lets a bare ``test`` through
        return "the part after the @-sign needs a dot: single-label domains take no mail"
    return ascii_domain, unicode_domain


def _validate(text: str):  # -> email_validator.ValidatedEmail
    return validate_email(
        text,
        allow_smtputf8=True,
        allow_empty_local=False,
        allow_quoted_local=False,  # refused on purpose (module docstring)
        allow_domain_literal=False,  # refused on purpose (module docstring)
        allow_display_name=False,
        strict=True,  # 64-character local part limit (we count octets afterwards)
        check_deliverability=False,  # DNS is layer 2 (mailsift.dns)
        test_environment=True,  # exempts ``test``; we decide on special use ourselves
        globally_deliverable=True,  # needs a dot and a TLD ending in a letter
    )


def _swap_special_suffix(domain: str) -> tuple[str, str] | None:
    """``mx.localhost`` -> (``mx.test``, ``localhost``); None when not applicable."""
    try:
        mapped = idna.uts46_remap(domain, std3_rules=False, transitional=False).lower()
    except (idna.IDNAError, ValueError):
        return None
    for name in SPECIAL_USE_DOMAINS:
        if mapped.endswith("." + name):
            return mapped[: -len(name)] + "test", name
    return None


def _special_use_message() -> str:
    return (
        "the domain is a special-use name (RFC 6761/6762/7686) that cannot receive mail; "
        "set MAILSIFT_ALLOW_TEST_DOMAINS=true to accept it in tests"
    )


def _problem(original: str, shown: str, reason: str, message: str) -> SyntaxProblem:
    return SyntaxProblem(original=original, email=_display(shown), reason=reason, message=message)


def _display(text: str) -> str:
    """Best-effort display form: printable, valid Unicode, at most 320 characters."""
    if len(text) > MAX_DISPLAY_CHARS:
        text = text[: MAX_DISPLAY_CHARS - 1] + "\u2026"
    return _SURROGATE.sub("\ufffd", _CONTROL.sub("\ufffd", text))


def _safe_str(value: object) -> str:
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 -- any object's __str__ may raise anything
        text = f"<{type(value).__name__}>"
    return text if isinstance(text, str) else ""

"""Reading SMTP replies: reply codes (RFC 5321 4.2), enhanced status codes (RFC 3463),
and the text, in that order."""

from __future__ import annotations

import re
import unicodedata

from mailsift.smtp.outcomes import Kind, Stage

__all__ = ["MAX_MESSAGE", "classify_reply", "enhanced_code", "is_too_many", "sanitize_message"]

MAX_MESSAGE = 500
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")
_BLOCK_TEXT = re.compile(
    r"spamhaus|spamcop|barracuda|blocked|blacklist|blocklist|block\s+list|denied|"
    r"poor\s+reputation|\bdnsbl\b|\brbl\b",
    re.IGNORECASE,
)
_FULL_TEXT = re.compile(
    r"mailbox\s+(is\s+)?full|over\s*quota|quota\s+exceeded|insufficient\s+storage", re.IGNORECASE
)
_DISABLED_TEXT = re.compile(r"disabled|deactivated|suspended|inactive", re.IGNORECASE)
_TOO_MANY_TEXT = re.compile(r"too\s+many\s+recipients", re.IGNORECASE)

def sanitize_message(text: object) -> str | None:
    """Server text made safe to store and log: line breaks become spaces, other control
    characters are removed, at most 500 characters."""
    if text is None:
        return None
    value = str(text).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    value = "".join(ch for ch in value if unicodedata.category(ch) not in ("Cc", "Cs", "Zl", "Zp"))
    value = " ".join(value.split())
    return value[:MAX_MESSAGE]


def enhanced_code(message: str) -> tuple[int, int, int] | None:
    """The RFC 3463 enhanced status code at the start of a reply text, if any."""
    match = _ENHANCED.match(message or "")
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def classify_reply(code: int, message: str, stage: Stage = "rcpt") -> Kind:
    """Map an SMTP reply to an outcome kind: code and enhanced status code first, text
    second (RFC 5321 4.2, RFC 3463).

    Policy refusals (``5.7.x``, or texts naming a blocklist) are ``blocked``: they are
    about our IP, not the mailbox, so they are checked before "mailbox not found". At the
    banner, 421 and 5xx mean we are turned away (``blocked``); a 5xx to ``MAIL FROM``
    refuses our sender (``blocked``); any 4xx is ``temporary`` (greylisting, RFC 6647).
    """
    message = message or ""
    if stage == "rcpt" and code in (250, 251):
        return "accepted"
    if stage != "rcpt" and 200 <= code < 400:
        return "accepted"
    enhanced = enhanced_code(message)
    if 500 <= code < 600 and enhanced is not None and enhanced[1] == 7:
        return "blocked"
    if code >= 400 and _BLOCK_TEXT.search(message):
        return "blocked"
    if stage in ("banner", "helo"):
        if code == 421 or 500 <= code < 600:
            return "blocked"
        return "temporary" if 400 <= code < 500 else "error"
    if stage == "mail":
        if 500 <= code < 600:
            return "blocked"
        return "temporary" if 400 <= code < 500 else "error"
    if stage == "starttls":
        return "error"
    # RCPT
    if code == 552 or (enhanced is not None and enhanced[1:] == (2, 2)):
        return "full"
    if enhanced == (5, 2, 1):
        return "disabled"
    if enhanced is None and code >= 400 and _FULL_TEXT.search(message):
        return "full"
    if 400 <= code < 500:
        return "temporary"
    if 500 <= code < 600:
        if enhanced is not None and enhanced[0] == 5 and enhanced[1] == 1:
            return "not_found"
        if enhanced is None and _DISABLED_TEXT.search(message):
            return "disabled"
        if code in (550, 551, 553, 554):
            return "not_found"
    return "error"



def is_too_many(message: str) -> bool:
    """A ``452`` that means "too many recipients" (RFC 5321 4.5.3.1.10), not a full disk."""
    return enhanced_code(message) == (4, 5, 3) or bool(_TOO_MANY_TEXT.search(message or ""))

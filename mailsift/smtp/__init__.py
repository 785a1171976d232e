"""SMTP probe: ask a domain's MX hosts whether mailboxes exist, without sending mail.

Layer 3 of the engine. For one domain, :meth:`SmtpProber.probe` opens as few
connections as it can (RFC 5321 section 3.3: many ``RCPT`` in one mail transaction),
speaks ``EHLO`` (``HELO`` as fallback, RFC 5321 4.1.1.1), upgrades with ``STARTTLS`` when
offered (RFC 3207; the certificate is not verified: a probe sends nothing secret and
must not fail on the self-signed certificates many MX hosts use), sends
``MAIL FROM`` and one ``RCPT TO`` per address, and ends with ``QUIT``. It never sends
``DATA``, so no mail is ever delivered.

Replies are read code first, RFC 3463 enhanced status code second, text last
(:func:`classify_reply`). Every step has a timeout (``settings.smtp_timeout``);
connections are paced by :mod:`.pacing`: an adaptive window per MX host set (from
``per_domain_concurrency`` up to ``max_per_domain_concurrency``, halved on pressure),
``concurrency`` in all, slots by critical path, tarpits held to a slow share, and a time
budget per domain (``smtp_domain_budget``). MX hosts are tried in preference order (RFC 5321 section 5.1), each
of their addresses in turn, until one holds a conversation. Faults never raise: they
become outcomes (``timeout``, ``unreachable``, ``blocked``, ``error``...) so that the
verifier can call the address ``unknown`` rather than ``invalid``.

The conversation runs on aiosmtplib (reply parsing with a bounded buffer, so an endless
line becomes an error, not a hang; STARTTLS; command-injection guard), with ``MAIL`` and
``RCPT`` sent through ``execute_command`` (pipelined ``RCPT``: through the transport,
with the same control-character guard) so the address goes on the wire exactly as
given, after our own checks.

Pipelining (RFC 2920). When the EHLO reply (the one after STARTTLS, when there is one)
lists ``PIPELINING``, the ``RCPT TO`` commands of a connection go out in groups of up to
:data:`PIPELINE_DEPTH` in one write (the catch-all probe first in the first group) and
their replies are read back in order, each mapped to its address exactly as a lone
``RCPT`` would be: one round trip per group instead of one per address. ``MAIL FROM`` is
*not* pipelined with the first group, although RFC 2920 allows it: a 4xx/5xx to the
first ``MAIL FROM`` must stop the ``RCPT`` commands (``blocked`` / ``temporary``, back
off) rather than send them into a refused transaction. A further transaction (after 100
recipients, RFC 5321 4.5.3.1.8, or a 452 4.5.3) sends ``RSET`` and ``MAIL FROM`` in the
same write as its group, their replies checked before any RCPT reply is read; ``QUIT``
goes with a session's last group. The first group is a sample of five: whether its
replies come together (a round trip) or one after another (a server judging each RCPT)
decides how the window grows and how the queue is shared between sessions. Each reply of
a group is awaited with the step timeout (``smtp_timeout``), counted from the previous
reply, so a group is bounded as the same commands sent one by one are. A 421 in a group
ends the connection there: later replies are not read, and their addresses go back to
the queue unanswered. Addresses refused with ``452 4.5.3`` (too many recipients) are
sent again in a new transaction, and the limit so learnt sizes the next groups. Servers
without ``PIPELINING`` get one command per round trip, as before. aiosmtplib's protocol
takes one reply per awaited command (it drops data that arrives while a parsed reply
waits), so while a group's replies come in, the transport is lent to
:class:`ReplyReader`, a parser with the same bounds.

Modules: :mod:`.replies` (reading replies), :mod:`.wire` (command guards, TLS, the
pipelining reader), :mod:`.pacing` (slots, windows, per-domain statistics),
:mod:`.session` (MX targets, one conversation),
:mod:`.prober` (:class:`SmtpProber`), :mod:`.outcomes` (what a probe returns).
"""

from mailsift.smtp.outcomes import DomainProbe, HostResolver, Kind, RcptOutcome, Stage
from mailsift.smtp.prober import SmtpProber
from mailsift.smtp.replies import classify_reply, sanitize_message
from mailsift.smtp.session import PIPELINE_DEPTH

__all__ = [
    "PIPELINE_DEPTH",
    "DomainProbe",
    "HostResolver",
    "Kind",
    "RcptOutcome",
    "SmtpProber",
    "Stage",
    "classify_reply",
    "sanitize_message",
]

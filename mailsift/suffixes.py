"""Registered names of hosts, by the Public Suffix List (https://publicsuffix.org).

The list is the one the ``publicsuffixlist`` package ships (nothing is fetched), parsed
once when this module is imported (~40 ms): ``mailsift run`` imports it in a thread
while Prefect starts (``pipeline.runtime.WARM_MODULES``), not during the verify step.
"""

from __future__ import annotations

from publicsuffixlist import PublicSuffixList

__all__ = ["registered_name"]

_LIST = PublicSuffixList()


def registered_name(host: str) -> str | None:
    """The registered name of a lower-case host name without its trailing dot
    (``mx.acme.co.uk`` -> ``acme.co.uk``); ``None`` for a public suffix itself or a
    single label."""
    return _LIST.privatesuffix(host)

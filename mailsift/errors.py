"""The one exception tree of mailsift.

Verification itself never raises for a bad address or a network fault: those become
results (``invalid`` or ``unknown``). Exceptions are for the caller's mistakes and for
conditions that must stop a whole run::

    MailsiftError
    ├── ConfigError(MailsiftError, ValueError)        bad settings or parameters
    ├── InputError(MailsiftError, ValueError)         a source file that cannot be read
    ├── WarehouseError(MailsiftError, RuntimeError)   missing database, wrong schema
    ├── BackendAuthError(MailsiftError, PermissionError)  API key refused (401/403)
    └── QualityGateFailed(MailsiftError, RuntimeError)    output failed its checks

The SMTP probe raises nothing: its faults are outcomes (:mod:`mailsift.smtp.outcomes`).
"""

from __future__ import annotations

__all__ = [
    "MailsiftError",
    "ConfigError",
    "InputError",
    "WarehouseError",
    "BackendAuthError",
    "QualityGateFailed",
]


class MailsiftError(Exception):
    """Base of every error mailsift raises on purpose."""


class ConfigError(MailsiftError, ValueError):
    """Settings or parameters that cannot work (bad nameserver, unknown backend...)."""


class InputError(MailsiftError, ValueError):
    """A source that cannot be read as a contact list. The message names the source."""


class WarehouseError(MailsiftError, RuntimeError):
    """The DuckDB warehouse is missing, locked, or has a schema we do not know."""


class BackendAuthError(MailsiftError, PermissionError):
    """The verification API refused our key: stop instead of marking everything unknown."""


class QualityGateFailed(MailsiftError, RuntimeError):
    """A run's output failed its data-quality checks; nothing was exported."""

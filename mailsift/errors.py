"""The one exception tree of mailsift.

Verification itself never raises for a bad address or a network fault: those become
results (``invalid`` or ``unknown``). Exceptions are for the caller's mistakes and for
conditions that must stop a whole run::

    MailsiftError
    ├── ConfigError(MailsiftError, ValueError)        bad settings or parameters
    ├── InputError(MailsiftError, ValueError)         a source file that cannot be read
    ├── WarehouseError(MailsiftError, RuntimeError)   missing database, wrong schema
    ├── BackendAuthError(MailsiftError, PermissionError)  API key refused (401/403)
    ├── QualityGateFailed(MailsiftError, RuntimeError)    output failed its checks
    └── ResourceError(MailsiftError, OSError)         the host: disk full, --out unusable

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
    "ResourceError",
    "resource_error",
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


class ResourceError(MailsiftError, OSError):
    """The host, not the input, stopped the run: no space left, an output path that is
    not a writable directory, out of memory. The CLI exits 3 (the environment)."""


def resource_error(exc: BaseException) -> ResourceError:
    """One line for an error of the host (``OSError`` such as ENOSPC, ``MemoryError``),
    naming the file when the error does: ``no space left on device: out/valid.csv``."""
    if isinstance(exc, ResourceError):
        return exc
    if isinstance(exc, MemoryError):
        return ResourceError("out of memory")
    if isinstance(exc, OSError):
        text = exc.strerror or " ".join(str(exc).split())[:200] or type(exc).__name__
        what = text[:1].lower() + text[1:]
        where = exc.filename if exc.filename is not None else None
        error = ResourceError(f"{what}: {where}" if where else what)
        error.errno = exc.errno
        return error
    return ResourceError(" ".join(str(exc).split()) or type(exc).__name__)

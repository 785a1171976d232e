"""mailsift: keep CRM contact lists deliverable.

The engine (this package) is pure async Python: syntax, DNS, an SMTP probe that never
sends mail, and reputation signals, combined into one result per address.
"""

from mailsift.errors import (
    BackendAuthError,
    ConfigError,
    InputError,
    MailsiftError,
    QualityGateFailed,
    WarehouseError,
)
from mailsift.result import Checks, VerificationResult
from mailsift.settings import Settings

__all__ = [
    "Settings",
    "Checks",
    "VerificationResult",
    "Verifier",
    "MailsiftError",
    "ConfigError",
    "InputError",
    "WarehouseError",
    "BackendAuthError",
    "QualityGateFailed",
]

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: importing the contract should not start the engine
    if name == "Verifier":
        from mailsift.verifier import Verifier

        return Verifier
    raise AttributeError(name)

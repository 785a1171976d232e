"""Bulk routes (filled in by the bulk-jobs piece)."""

from __future__ import annotations

from typing import Any

__all__ = ["install_bulk_routes"]


def install_bulk_routes(app: Any, service: Any, api_key: Any, errors: Any) -> None:
    return None

"""The mailsift warehouse: DuckDB tables, migrations and the queries the flows run.

Knows nothing of Prefect. Tables are defined once with SQLAlchemy Core
(:mod:`warehouse.schema`), created through numbered migrations
(:mod:`warehouse.migrations`) and used through :class:`Warehouse`
(:mod:`warehouse.store`); polars frames in and out (:mod:`warehouse.frames`).
"""

from __future__ import annotations

from .frames import (
    HISTORY_COLUMNS,
    HISTORY_SCHEMA,
    RESULT_COLUMNS,
    RESULT_SCHEMA,
    results_frame,
    results_from_frame,
)
from .migrations import LATEST_VERSION, MIGRATIONS
from .store import Warehouse

__all__ = [
    "HISTORY_COLUMNS",
    "HISTORY_SCHEMA",
    "LATEST_VERSION",
    "MIGRATIONS",
    "RESULT_COLUMNS",
    "RESULT_SCHEMA",
    "Warehouse",
    "results_frame",
    "results_from_frame",
]

"""Prefect tasks of the pipeline: extract, normalize, verify, load, quality, export.

The modules ``extract``, ``normalize`` and ``export`` hold pure functions over polars
frames (no Prefect); the flows wrap them in thin tasks.
"""

"""``mailsift serve``: the verification API of the integration guide, self-hosted.

An ASGI app (FastAPI, served by uvicorn) over the engine (:mod:`mailsift`) and the
warehouse (:mod:`warehouse`); neither of them imports this package.

- :mod:`service.app`: the routes (``/api/v1/verify``, ``/api/v1/bulk/...``), OpenAPI at ``/docs``
- :mod:`service.settings`: ``MAILSIFT_SERVE_*`` settings (limits, budgets, webhook backoff)
- :mod:`service.keys`: API keys (``ms_live_...``/``ms_test_...``), stored hashed in the warehouse
- :mod:`service.limits`: requests per minute per key, body size
- :mod:`service.state`: the service's own durable state (SQLite): results waiting for the
  warehouse, bulk jobs and their results, the webhook outbox
- :mod:`service.sharing`: how the service shares the DuckDB warehouse with ``mailsift run``
  and ``mailsift gate`` (short transactions, retried on the lock)
- :mod:`service.lookups`: one address: cache, budget, background completion
- :mod:`service.jobs`: bulk jobs, each a flow run when a Prefect API is configured
- :mod:`service.outbox`: per-address signed webhooks, retried, durable across restarts
- :mod:`service.cli`: the ``mailsift serve`` and ``mailsift keys`` commands
"""

__all__: list[str] = []

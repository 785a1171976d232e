"""The pipeline's own pieces that are neither a flow nor a task.

- :mod:`pipeline.settings`: the one place the pipeline's defaults are written (30 days,
  the 20 % unknown limit, 500 addresses a batch, the webhook schedule); the warehouse,
  the tasks, the flows, the deployments and the commands read them from there.
- :mod:`pipeline.cli`: the pipeline's commands (``run``, ``reverify``, ``gate``, ``demo``,
  ``webhooks`` ...), mounted on the ``mailsift`` command by :mod:`mailsift.cli` and
  imported only when one of them runs (or ``mailsift --help`` lists them).

The engine (:mod:`mailsift`) never imports this package at import time.
"""

__all__: list[str] = []

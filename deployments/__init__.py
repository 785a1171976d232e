"""All deployments in one place: :mod:`deployments.serve` (long-running ``serve``) and
``deployments/prefect.yaml`` (``prefect deploy`` to a work pool). Both declare the same two
deployments from :data:`deployments.serve.DEPLOYMENTS`."""

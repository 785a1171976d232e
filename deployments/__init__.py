"""All deployments in one place: :data:`deployments.serve.DEPLOYMENTS`, served by
``python -m deployments.serve``."""

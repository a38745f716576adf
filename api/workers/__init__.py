"""Background workers of the service: SET push delivery, the SSE hub, the scheduler and the
signed checkpoints with their witnesses.

They run beside the HTTP layer (started and stopped by the app's lifespan) and never import
it: HTTP lives in ``api.routes`` and ``api.app``; an import-linter contract keeps it so.
"""

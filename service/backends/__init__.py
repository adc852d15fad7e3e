"""Execution backends other than the local GPU worker (``service.worker``)."""

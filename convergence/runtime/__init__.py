"""Wiring: the adapters a run needs (BigQuery, KMS, publishers, HTTP), built once per process."""

from convergence.runtime.services import Services

__all__ = ["Services"]

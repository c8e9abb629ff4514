"""The read-only web console on `convergence serve` (`/console`)."""

from convergence.console.app import Console

__all__ = ["Console"]

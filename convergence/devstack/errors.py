"""Errors raised by the local stack."""

from __future__ import annotations


class EmulatorError(RuntimeError):
    """Base class for local-stack failures."""


class EmulatorNotInstalledError(EmulatorError):
    """The emulator's program is not installed on this machine."""


class EmulatorStartError(EmulatorError):
    """The emulator did not become ready in time, or exited while starting."""

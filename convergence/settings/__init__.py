"""Service settings, read from the environment and validated once at start-up."""

from convergence.settings.model import Environment, Settings, SettingsError, get_settings, reset_settings

__all__ = ["Environment", "Settings", "SettingsError", "get_settings", "reset_settings"]

"""Logging, tracing and metrics shared by every process."""

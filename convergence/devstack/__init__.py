"""Embedded local stack: Pub/Sub and BigQuery emulators on loopback ports (see devstack.stack)."""

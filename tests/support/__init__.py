"""Helpers shared by the tests (settings, services, seeded data); fixtures live in tests/conftest.py."""

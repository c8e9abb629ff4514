"""Generic processors: REST API extraction, SQL transformation in the org's dataset, stored procedures."""

"""SQL helpers for the processors that run SQL (transforms, the billing copy, stored procedures):
identifier templating that only ever pastes validated names, typed query parameters and SQL literals,
and the catalog that syncs `configs/system/procedures/{domain}/*.sql` to BigQuery routines.

Not processors themselves: no `get_engine()` here, nothing resolves to `sql.*` ps_types.
"""

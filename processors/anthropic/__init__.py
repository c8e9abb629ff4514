"""Anthropic processors: Admin API usage and cost reports, cost calculation in BigQuery from per-org
pricing (cache writes by TTL, long context, batch), reconciliation and the pricing seed."""

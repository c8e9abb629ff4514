"""OpenAI processors: usage and billed-cost extraction from the organization APIs, cost calculation in
BigQuery from per-org pricing, reconciliation, pricing/subscription seeds and monthly subscriptions."""

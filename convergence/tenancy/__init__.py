"""Tenancy: org onboarding, org API keys, encrypted provider credentials and the org gate (subscription
status and daily quota), all on the central dataset's tables with `WHERE org_slug = @org_slug`."""

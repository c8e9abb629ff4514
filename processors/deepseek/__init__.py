"""DeepSeek processors. DeepSeek's API has no usage or billing history, only the current balance: a daily
balance snapshot, spend derived from consecutive snapshots net of recorded credits, and cost in BigQuery
from the token counts an org supplies, priced from per-org pricing (cache hit / cache miss / output)."""

"""FOCUS unified cost view: one `focus.<source>` processor per cost source, all writing
`{org}_{env}.focus_cost_daily` (schema configs/focus/schemas/focus_cost_daily.json)."""

"""The DeepSeek API requests shared by the deepseek.* ps_types (not a ps_type: the underscore keeps it
out of the registry)."""

from __future__ import annotations

USER_AGENT = "convergence/0.1 (usage-cost pipelines)"
PROVIDER = "deepseek"
CREDENTIAL_PROVIDER = "DEEPSEEK"


def bearer_headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Accept": "application/json", "User-Agent": USER_AGENT}

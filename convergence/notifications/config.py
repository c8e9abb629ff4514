"""The channel configs under configs/notify_systems/{email_notification,slack_notification}/config.yml."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, dict[str, Any]] = {
    "email_notification": {"enabled": True, "failure_notice": True, "recipients": [],
                           "subject": "[Convergence] {status}: {pipeline_id} for {org_slug}"},
    "slack_notification": {"enabled": True, "failure_notice": True, "username": "Convergence",
                           "icon_emoji": ":rotating_light:", "channel": None},
}


@lru_cache(maxsize=16)
def _read(path: Path, mtime: float) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a notification config must be a mapping")
    return data


def channel_config(configs_dir: Path, channel: str) -> dict[str, Any]:
    """The channel's config merged over its defaults (a missing file means the defaults)."""
    path = Path(configs_dir) / "notify_systems" / channel / "config.yml"
    loaded = _read(path, path.stat().st_mtime) if path.is_file() else {}
    return {**DEFAULTS.get(channel, {}), **loaded}

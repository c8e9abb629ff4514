"""The request a paginator and an auth class act on: method, URL, query parameters, headers, JSON body."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class PageRequest:
    method: str
    url: str
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None

    def copy(self) -> PageRequest:
        return PageRequest(self.method, self.url, dict(self.params), dict(self.headers), copy.deepcopy(self.json))

    @property
    def origin(self) -> tuple[str, str, int | None]:
        parts = urlsplit(self.url)
        return parts.scheme, (parts.hostname or "").lower(), parts.port

    def query_params(self) -> list[tuple[str, str]]:
        """Query parameters as aiohttp takes them: lists become repeated keys, booleans lower-case."""
        pairs: list[tuple[str, str]] = []
        for key, value in self.params.items():
            values = value if isinstance(value, list | tuple) else [value]
            for item in values:
                if item is None:
                    continue
                pairs.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
        return pairs

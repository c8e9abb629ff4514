"""The provider registry (configs/system/providers.yml): canonical provider names, their aliases, base URLs,
auth and the validation call. Credentials, the credential resolver, processors and eligibility all resolve
provider names through `canonical_provider` / `provider_names`, so a key stored as CLAUDE is ANTHROPIC's.

A name the registry does not know (a generic REST vendor such as VENDOR_API) is its own canonical name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from convergence.paths import bundled_configs_dir

REGISTRY_FILE = Path("system") / "providers.yml"
_NAME = re.compile(r"[A-Z][A-Z0-9_]{1,49}")
_AUTH_TYPES = ("header", "google_service_account")
_METHODS = ("GET", "POST")


class ProviderRegistryError(ValueError):
    """configs/system/providers.yml is missing or malformed."""


@dataclass(frozen=True)
class Validation:
    method: str
    path: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Provider:
    name: str
    display_name: str
    aliases: tuple[str, ...]
    base_url: str
    base_url_setting: str | None
    auth: Mapping[str, Any]
    headers: Mapping[str, str]
    validation: Validation | None
    service: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def url(self, settings: Any = None) -> str:
        """The base URL: the setting named by `base_url_setting` when settings are given, else the file's."""
        base = self.base_url
        if settings is not None and self.base_url_setting:
            base = str(getattr(settings, self.base_url_setting, None) or base)
        if "{service}" in base:
            base = base.replace("{service}", self.service or "")
        return base.rstrip("/")

    def auth_headers(self, secret: str) -> dict[str, str]:
        """Headers of an authenticated call for a header-auth provider (never logged)."""
        if self.auth.get("type") != "header":
            raise ValueError(f"{self.name} does not authenticate with a header")
        scheme = self.auth.get("scheme")
        value = f"{scheme} {secret}" if scheme else secret
        return {**{str(k): str(v) for k, v in self.headers.items()}, str(self.auth["header"]): value}


@dataclass(frozen=True)
class ProviderRegistry:
    providers: Mapping[str, Provider]
    _by_name: Mapping[str, str]

    def get(self, name: str) -> Provider | None:
        canonical = self._by_name.get(str(name).upper())
        return self.providers.get(canonical) if canonical else None

    def canonical(self, name: str) -> str:
        upper = str(name).upper()
        return self._by_name.get(upper, upper)

    def names(self, name: str) -> tuple[str, ...]:
        """The canonical name first, then its aliases: every name a stored row may carry."""
        provider = self.get(name)
        return provider.names if provider is not None else (str(name).upper(),)


def _problem(where: str, message: str) -> ProviderRegistryError:
    return ProviderRegistryError(f"{where}: {message}")


def parse_registry(raw: Any, where: str = "providers.yml") -> ProviderRegistry:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("providers"), Mapping) or not raw["providers"]:
        raise _problem(where, "`providers` must map provider names to their settings")
    providers: dict[str, Provider] = {}
    by_name: dict[str, str] = {}
    for name, spec in raw["providers"].items():
        at = f"{where}: providers.{name}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ProviderRegistryError(f"{at}: a provider name is 2-50 characters of A-Z, 0-9 and _")
        if not isinstance(spec, Mapping):
            raise ProviderRegistryError(f"{at}: must be a mapping")
        unknown = set(spec) - {"display_name", "aliases", "base_url", "base_url_setting", "auth", "headers",
                               "validation", "service"}
        if unknown:
            raise ProviderRegistryError(f"{at}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        aliases = spec.get("aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) and _NAME.fullmatch(a) for a in aliases):
            raise ProviderRegistryError(f"{at}.aliases: a list of upper-case names")
        base_url = spec.get("base_url")
        if not isinstance(base_url, str) or not base_url.startswith(("https://", "http://")):
            raise ProviderRegistryError(f"{at}.base_url: an http(s) URL is required")
        auth = spec.get("auth")
        if not isinstance(auth, Mapping) or auth.get("type") not in _AUTH_TYPES:
            raise ProviderRegistryError(f"{at}.auth.type: one of {', '.join(_AUTH_TYPES)}")
        if auth["type"] == "header" and not isinstance(auth.get("header"), str):
            raise ProviderRegistryError(f"{at}.auth.header: the header that carries the key is required")
        if auth["type"] == "google_service_account" and not (
                isinstance(auth.get("scopes"), list) and auth["scopes"]
                and all(isinstance(s, str) and s.startswith("https://") for s in auth["scopes"])):
            raise ProviderRegistryError(f"{at}.auth.scopes: a list of OAuth scope URLs")
        headers = spec.get("headers") or {}
        if not isinstance(headers, Mapping):
            raise ProviderRegistryError(f"{at}.headers: must map header names to values")
        validation = None
        if spec.get("validation") is not None:
            check = spec["validation"]
            if not isinstance(check, Mapping) or str(check.get("method", "")).upper() not in _METHODS \
                    or not str(check.get("path", "")).startswith("/"):
                raise ProviderRegistryError(f"{at}.validation: needs method (GET or POST) and a path starting /")
            params = check.get("params") or {}
            if not isinstance(params, Mapping):
                raise ProviderRegistryError(f"{at}.validation.params: must be a mapping")
            validation = Validation(str(check["method"]).upper(), str(check["path"]), dict(params))
        for alias in (name, *aliases):
            if alias in by_name:
                raise ProviderRegistryError(f"{at}: name {alias} is already used by {by_name[alias]}")
            by_name[alias] = name
        providers[name] = Provider(
            name=name, display_name=str(spec.get("display_name") or name), aliases=tuple(aliases),
            base_url=base_url, base_url_setting=spec.get("base_url_setting"), auth=dict(auth),
            headers={str(k): str(v) for k, v in headers.items()}, validation=validation,
            service=spec.get("service"))
    return ProviderRegistry(providers, by_name)


def load_registry_file(path: Path) -> ProviderRegistry:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProviderRegistryError(f"{path}: the provider registry is missing") from None
    except yaml.YAMLError as error:
        raise ProviderRegistryError(f"{path}: invalid YAML: {error}") from None
    return parse_registry(raw, str(path))


@lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int) -> ProviderRegistry:
    return load_registry_file(Path(path))


def load_registry(configs_dir: Path | None = None) -> ProviderRegistry:
    """The registry of `configs_dir` (default: the repository's configs/), re-read when the file changes."""
    path = Path(configs_dir or bundled_configs_dir()) / REGISTRY_FILE
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        if configs_dir is not None and Path(configs_dir).resolve() != bundled_configs_dir().resolve():
            return load_registry(None)  # a configs dir without a registry of its own uses the bundled one
        raise ProviderRegistryError(f"{path}: the provider registry is missing") from None
    return _cached(str(path), mtime)


def provider_registry_problems(configs_dir: Path) -> list[str]:
    """`convergence validate`: the registry file of `configs_dir` exists, parses, and its
    entries are well formed (unique names and aliases, base URLs, auth, validation calls)."""
    path = Path(configs_dir) / REGISTRY_FILE
    if not path.is_file():
        if Path(configs_dir).resolve() == bundled_configs_dir().resolve():
            return [f"{path}: the provider registry is missing"]
        return []  # another configs dir uses the bundled registry (load_registry)
    try:
        load_registry_file(path)
    except ProviderRegistryError as error:
        return [str(error)]
    return []


def canonical_provider(name: str, configs_dir: Path | None = None) -> str:
    return load_registry(configs_dir).canonical(name)


def provider_names(name: str, configs_dir: Path | None = None) -> tuple[str, ...]:
    return load_registry(configs_dir).names(name)


__all__ = ["Provider", "ProviderRegistry", "ProviderRegistryError", "Validation", "canonical_provider",
           "load_registry", "parse_registry", "provider_names", "provider_registry_problems"]

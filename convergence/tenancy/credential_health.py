"""A provider's 401/403 during a run marks the org's credential INVALID: one UPDATE per failing run, only
on the VALID/PENDING/ERROR -> INVALID transition, and only for the stored credential the run read (a key
rotated since is left alone). Eligibility then skips the org's pipelines needing that provider until a
new credential is set. The org is told once, on that transition (its admin email and Slack webhook, unless
it opted out): later runs needing the provider are not scheduled, so no notice comes every day.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from convergence.pipeline.errors import ErrorCode
from convergence.pipeline.results import PipelineResult, RunStatus
from convergence.tenancy.providers import load_registry

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices

log = structlog.get_logger(__name__)


def rejected_provider(result: PipelineResult, context: Any, integration: str | None) -> tuple[str, str] | None:
    """(provider, error) when a step failed with PROVIDER_AUTH_FAILED using a stored credential of the run."""
    if result.status is not RunStatus.FAILED or not context.credentials_read:
        return None
    failed = [(s, s.error) for s in result.steps
              if s.error is not None and s.error.code == ErrorCode.PROVIDER_AUTH_FAILED]
    if not failed:
        return None
    settings = getattr(context.services, "settings", None)
    registry = load_registry(getattr(settings, "configs_dir", None))
    read = context.credentials_read
    step, step_error = failed[0]
    candidates = [registry.canonical(integration)] if integration else []
    prefix = registry.get(step.ps_type.split(".", 1)[0])
    if prefix is not None:
        candidates.append(prefix.name)
    if len(read) == 1:
        candidates.append(next(iter(read)))
    for provider in candidates:
        if provider in read:
            return provider, f"{step.step_id}: {step_error.message}"
    return None


async def mark_rejected_credential(services: PlatformServices, result: PipelineResult, context: Any,
                                   integration: str | None = None) -> bool:
    """True when this run moved the credential to INVALID. Never raises (the run's outcome stands)."""
    try:
        found = rejected_provider(result, context, integration)
        if found is None:
            return False
        provider, error = found
        store = services.credentials
        changed = await asyncio.to_thread(store.set_status, context.org_slug, provider, "INVALID", error,
                                          only_from_valid=True, not_changed_since=context.credentials_read[provider])
        if not changed:
            return False
        log.warning("credential rejected by the provider; marked INVALID", org_slug=context.org_slug,
                    provider=provider, run_id=context.run_id)
        await asyncio.to_thread(store.central.audit, context.org_slug, "CREDENTIAL_INVALIDATED",
                                resource_type="integration_credential", resource_id=provider,
                                details={"provider": provider, "run_id": context.run_id})
        await _tell_org(services, result, context, provider, error)
        return True
    except Exception as error:  # noqa: BLE001 - bookkeeping never changes the run's result
        log.warning("credential status not recorded", org_slug=getattr(context, "org_slug", None),
                    error=type(error).__name__)
        return False


async def _tell_org(services: PlatformServices, result: PipelineResult, context: Any, provider: str,
                   error: str) -> None:
    from convergence.notifications.messages import RunSummary

    notifier = getattr(services, "notifier", None)
    if notifier is None or not hasattr(notifier, "org_notice"):
        return
    summary = RunSummary(
        org_slug=context.org_slug, run_id=context.run_id, status=result.status.value,
        pipeline_id=result.pipeline_id, trigger=context.trigger, attempt=context.attempt,
        error_code=ErrorCode.CREDENTIAL_INVALID.value,
        error_message=(f"{provider} rejected the stored {provider} credential, now marked INVALID: pipelines "
                       f"that need it are paused until a new one is set (convergence credentials set). {error}"))
    deliveries = await notifier.org_notice(summary)
    log.info("org told of its invalid credential", org_slug=context.org_slug, provider=provider,
             sent=sorted(d.channel for d in deliveries if d.sent))


__all__ = ["mark_rejected_credential", "rejected_provider"]

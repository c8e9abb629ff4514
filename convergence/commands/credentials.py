"""`convergence credentials set|validate|list|delete`: an org's provider credentials (KMS-encrypted in
org_integration_credentials; names and aliases from configs/system/providers.yml).

The secret is read from stdin (piped) or a hidden prompt, never from the command line: argv is visible to
every user of the machine and kept in shell histories. Nothing here prints a secret: `list` shows a
fingerprint. Every write is one DML statement (MERGE/UPDATE), never a streaming insert.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

import click

from convergence.commands.output import output_options

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices


@click.group()
def credentials() -> None:
    """Provider credentials of an org: set (from stdin or a prompt), validate, list, delete."""


def _org(org: str) -> str:
    from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug

    try:
        return validate_org_slug(org)
    except InvalidIdentifier as error:
        raise click.BadParameter(str(error), param_hint="ORG") from None


def _provider(settings: Any, provider: str) -> str:
    from convergence.tenancy.providers import load_registry
    from convergence.tenancy.validation import UnknownProvider, provider_for
    from convergence.warehouse.identifiers import InvalidIdentifier

    try:
        from convergence.tenancy.credentials import validate_provider

        name = validate_provider(provider)
        provider_for(settings, name)
    except (InvalidIdentifier, UnknownProvider) as error:
        raise click.BadParameter(str(error), param_hint="PROVIDER") from None
    return load_registry(settings.configs_dir).canonical(name)


def _services() -> Any:
    from convergence.cli import load_settings_or_exit
    from convergence.runtime.services import Services

    return Services(load_settings_or_exit())


def _onboarded(services: PlatformServices, org: str) -> None:
    central = services.credentials.central
    found = central.queries.rows("SELECT COUNT(*) AS n FROM " + central.ref("org_profiles") +  # noqa: S608
                                 " WHERE `org_slug` = @org", {"org": org})
    if not found or not found[0]["n"]:
        raise click.ClickException(f"org {org} is not onboarded")


def _read_secret() -> str:
    stream = sys.stdin
    if stream is None or stream.isatty():
        secret = click.prompt("Credential (input hidden)", hide_input=True, default="", show_default=False)
    else:
        secret = stream.read()
    secret = secret.strip()
    if not secret:
        raise click.ClickException("no credential given: pipe it on stdin or type it at the prompt")
    return secret


def _run(coro_factory: Any, services: PlatformServices) -> Any:
    async def main() -> Any:
        try:
            return await coro_factory()
        finally:
            await services.aclose()

    return asyncio.run(main())


def _emit(as_json: bool, data: dict[str, Any], line: str) -> None:
    click.echo(json.dumps(data, default=str, sort_keys=True) if as_json else line)


@credentials.command("set")
@click.argument("org")
@click.argument("provider")
@click.option("--name", "credential_name", default=None, help="A label for the credential.")
@click.option("--no-validate", is_flag=True, help="Store only; the status stays PENDING.")
@output_options
def set_credential(org: str, provider: str, credential_name: str | None, no_validate: bool, as_json: bool) -> None:
    """Store ORG's credential for PROVIDER (read from stdin or a hidden prompt), then validate it."""
    from convergence.tenancy.credentials import fingerprint
    from convergence.tenancy.validation import check_credential

    org = _org(org)
    services = _services()
    provider = _provider(services.settings, provider)
    secret = _read_secret()
    _onboarded(services, org)
    services.credentials.put(org, provider, secret, credential_name=credential_name)
    data: dict[str, Any] = {"org": org, "provider": provider, "fingerprint": fingerprint(secret),
                            "validation_status": "PENDING"}
    if not no_validate:
        verdict = _run(lambda: check_credential(services, provider, secret), services)
        services.credentials.set_status(org, provider, verdict.status, verdict.error)
        data.update(validation_status=verdict.status, validation_error=verdict.error)
    line = f"stored {provider} credential of {org} ({data['fingerprint']}): {data['validation_status']}"
    if data.get("validation_error"):
        line += f" - {data['validation_error']}"
    _emit(as_json, data, line)
    if data["validation_status"] in ("INVALID", "ERROR"):
        sys.exit(1)


@credentials.command("validate")
@click.argument("org")
@click.argument("provider")
@output_options
def validate_credential(org: str, provider: str, as_json: bool) -> None:
    """Check ORG's stored PROVIDER credential with the provider's cheapest authenticated call."""
    from convergence.tenancy.credentials import CredentialDecryptError, CredentialNotFound
    from convergence.tenancy.validation import validate_stored

    org = _org(org)
    services = _services()
    provider = _provider(services.settings, provider)
    try:
        verdict = _run(lambda: validate_stored(services, org, provider), services)
    except (CredentialNotFound, CredentialDecryptError) as error:
        raise click.ClickException(str(error)) from None
    data = {"org": org, "provider": provider, "validation_status": verdict.status,
            "validation_error": verdict.error}
    line = f"{provider} credential of {org}: {verdict.status}" + (f" - {verdict.error}" if verdict.error else "")
    _emit(as_json, data, line)
    if not verdict.valid:
        sys.exit(1)


@credentials.command("list")
@click.argument("org")
@output_options
def list_credentials(org: str, as_json: bool) -> None:
    """ORG's active credentials: provider, status, last validation, fingerprint (never the secret)."""
    org = _org(org)
    services = _services()
    rows = services.credentials.listing(org)
    if as_json:
        click.echo(json.dumps(rows, default=str, sort_keys=True))
        return
    if not rows:
        click.echo(f"org {org} has no credentials")
        return
    columns = ("provider", "validation_status", "last_validated_at", "fingerprint", "credential_name",
               "validation_error")
    table = [[("" if row.get(c) is None else str(row.get(c)))[:80] for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@credentials.command("delete")
@click.argument("org")
@click.argument("provider")
@output_options
def delete_credential(org: str, provider: str, as_json: bool) -> None:
    """Deactivate ORG's PROVIDER credential (its pipelines needing it stop being scheduled)."""
    from convergence.tenancy.credentials import validate_provider
    from convergence.warehouse.identifiers import InvalidIdentifier

    org = _org(org)
    services = _services()
    try:
        name = services.credentials.canonical(validate_provider(provider))
    except InvalidIdentifier as error:
        raise click.BadParameter(str(error), param_hint="PROVIDER") from None
    removed = services.credentials.delete(org, name)
    if not removed:
        raise click.ClickException(f"org {org} has no active {name} credential")
    _emit(as_json, {"org": org, "provider": name, "deleted": True}, f"deleted {name} credential of {org}")

"""`convergence notify ORG`: who in the org hears about its failed, timed-out and dead-lettered runs.

    convergence notify acme                        # admin email, Slack webhook set or not, on/off
    convergence notify acme --off                  # the org opts out (platform recipients still hear)
    convergence notify acme --on
    echo "$URL" | convergence notify acme --slack-webhook -   # stored encrypted as SLACK_WEBHOOK
    convergence notify acme --no-slack-webhook

The webhook URL is read from stdin, never from the command line (it would sit in shell history and in
the process list), and is never printed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from convergence.commands.output import output_options


@click.command()
@click.argument("org")
@click.option("--on/--off", "enabled", default=None, help="Turn the org's failure notices on or off.")
@click.option("--slack-webhook", "webhook_from", type=click.Choice(["-"]), default=None,
              help="Read the org's Slack incoming-webhook URL from stdin ('-') and store it encrypted.")
@click.option("--no-slack-webhook", "remove_webhook", is_flag=True, help="Remove the org's Slack webhook.")
@output_options
def notify(org: str, enabled: bool | None, webhook_from: str | None, remove_webhook: bool, as_json: bool) -> None:
    """Show or change an org's own failure notices (its admin email and Slack webhook)."""
    from convergence.cli import load_settings_or_exit
    from convergence.httpclient import AddressGuard, BlockedAddress
    from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug

    try:
        org = validate_org_slug(org)
    except InvalidIdentifier as error:
        raise click.BadParameter(str(error), param_hint="ORG") from None
    if webhook_from and remove_webhook:
        raise click.UsageError("--slack-webhook and --no-slack-webhook contradict each other")
    webhook = None
    settings = load_settings_or_exit()
    if webhook_from:
        webhook = sys.stdin.readline().strip()
        guard = AddressGuard(enabled=settings.is_production, allowed_hosts=frozenset(settings.outbound_allowed_hosts))
        try:
            guard.check_url(webhook)
        except BlockedAddress as error:
            raise click.BadParameter(f"the webhook URL is refused: {error}", param_hint="--slack-webhook") from None
    from google.api_core import exceptions

    try:
        _apply(org, enabled, webhook, remove_webhook, as_json, settings)
    except exceptions.GoogleAPIError as error:
        # A central dataset older than the schema files lacks `failure_notices` until bootstrap adds it.
        raise click.ClickException(f"BigQuery refused: {str(getattr(error, 'message', error))[:300]} "
                                   "(run `convergence bootstrap` if the central tables are missing or older)") from None


def _apply(org: str, enabled: bool | None, webhook: str | None, remove_webhook: bool, as_json: bool,
           settings: Any) -> None:
    from convergence.kms import make_cipher
    from convergence.tenancy.central import Central
    from convergence.tenancy.contacts import SLACK_PROVIDER, OrgNotFound, read_contacts, set_failure_notices
    from convergence.tenancy.credentials import CredentialStore
    from convergence.warehouse.client import make_client

    client = make_client(settings)
    central = Central(client, settings)
    cipher = make_cipher(settings)
    contact = read_contacts(central, cipher, [org])[org]
    if not contact.exists:
        raise click.ClickException(f"org {org} is not onboarded")
    changed = []
    if enabled is not None:
        try:
            set_failure_notices(central, org, enabled)
        except OrgNotFound as error:
            raise click.ClickException(str(error)) from None
        changed.append(f"failure notices {'on' if enabled else 'off'}")
    if webhook:
        CredentialStore(client, settings, cipher).put(org, SLACK_PROVIDER, webhook, credential_name="failure notices")
        changed.append("Slack webhook stored")
    if remove_webhook:
        removed = CredentialStore(client, settings, cipher).delete(org, SLACK_PROVIDER)
        changed.append("Slack webhook removed" if removed else "no Slack webhook to remove")
    if changed:
        contact = read_contacts(central, cipher, [org])[org]
    state = {"org": org, "failure_notices": "on" if contact.enabled else "off", "admin_email": contact.admin_email,
             "slack_webhook": "set" if contact.slack_webhook is not None else "not set", "changed": changed}
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    for line in changed:
        click.echo(line)
    click.echo(f"org {org}: failure notices {state['failure_notices']}; admin email "
               f"{contact.admin_email or '(none)'}; Slack webhook {state['slack_webhook']}")

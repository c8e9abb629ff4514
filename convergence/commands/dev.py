"""`convergence dev`: the embedded local stack for trying things out."""

from __future__ import annotations

import importlib.util
import sys

import click

# Exit code of a command that cannot start here (as `convergence.cli` uses for settings problems).
EXIT_NOT_HERE = 2


def _require_local_stack() -> None:
    """The runtime image installs no `[local]` extra: say so in one line rather than fail on an import."""
    if importlib.util.find_spec("bqemulator") is None:
        click.echo("convergence dev: the local stack (emulators) is not part of this install (the Docker image "
                   "has none); run it from a checkout with `pip install -e .[local]`", err=True)
        sys.exit(EXIT_NOT_HERE)


@click.group()
def dev() -> None:
    """Local development: emulators, demo org, demo runs."""


@dev.command()
@click.option("--keep-running", is_flag=True, help="Leave the stack up after the demo (Ctrl-C to stop).")
@click.option("--verbose", is_flag=True, help="Show the service's logs too.")
def demo(keep_running: bool, verbose: bool) -> None:
    """Start everything locally, publish demo run requests, show the results (`make run`)."""
    _require_local_stack()
    from convergence.devstack.demo import run_demo

    sys.exit(run_demo(click.echo, keep_running=keep_running, verbose=verbose))


@dev.command()
def stack() -> None:
    """Start the emulators and print the environment that points at them; Ctrl-C stops them."""
    _require_local_stack()
    import time

    from convergence.devstack.stack import LocalStack

    with LocalStack() as local:
        for name, value in local.env.items():
            click.echo(f"export {name}={value}")
        click.echo("# emulators running; Ctrl-C to stop", err=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


@dev.command()
@click.argument("org")
@click.option("--plan", default="STARTER", show_default=True, help="STARTER, PROFESSIONAL or SCALE.")
@click.option("--status", default="ACTIVE", show_default=True, help="Subscription status (ACTIVE, TRIAL, ...).")
def onboard(org: str, plan: str, status: str) -> None:
    """Create an org: profile, API key (shown once), subscription, quota and its dataset."""
    from convergence.cli import load_settings_or_exit
    from convergence.runtime import Services
    from convergence.tenancy.onboarding import OrgAlreadyExists, onboard_org

    settings = load_settings_or_exit()
    services = Services(settings)
    try:
        result = onboard_org(services.bigquery, settings, services.cipher, org, plan.upper(),
                             subscription_status=status.upper())
    except (OrgAlreadyExists, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"org {org} onboarded: plan {result.plan}, subscription {result.subscription_status}, "
               f"dataset {settings.org_dataset(org)}")
    click.echo(f"API key (shown once, store it now): {result.api_key}")


@dev.command("set-credential")
@click.argument("org")
@click.argument("provider")
@click.option("--secret", prompt=True, hide_input=True, help="The credential (prompted when not given).")
def set_credential(org: str, provider: str, secret: str) -> None:
    """Store a provider credential for an org, KMS-encrypted (never printed)."""
    from convergence.cli import load_settings_or_exit
    from convergence.runtime import Services

    services = Services(load_settings_or_exit())
    try:
        credential_id = services.credentials.put(org, provider.upper(), secret)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"credential {provider.upper()} stored for {org} (id {credential_id})")

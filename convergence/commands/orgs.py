"""`convergence orgs pipelines list|enable|disable|set`: an org's own pipeline configuration.

Writes one MERGE keyed by (org, pipeline) per table changed (tenancy.pipeline_configs): operator actions,
rare, never on streamed rows. Reads filter by the org through a query parameter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from convergence.commands.output import complete_pipelines, output_options


@click.group()
def orgs() -> None:
    """Organizations: dryrun, onboard, status, suspend/resume, and per-org pipeline configuration."""


def _services_and_org(org: str) -> tuple[Any, str]:
    from convergence.cli import load_settings_or_exit
    from convergence.runtime import Services
    from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug

    try:
        org = validate_org_slug(org)
    except InvalidIdentifier as error:
        raise click.BadParameter(str(error), param_hint="ORG") from None
    return Services(load_settings_or_exit()), org


@orgs.command()
@click.argument("org")
@click.option("--plan", default="STARTER", show_default=True, help="STARTER, PROFESSIONAL or SCALE.")
@click.option("--admin-email", default=None, help="Who hears about the org's failed runs.")
@output_options
def dryrun(org: str, plan: str, admin_email: str | None, as_json: bool) -> None:
    """What onboarding ORG would fail on, creating nothing (exit 1 when a check fails)."""
    from convergence.tenancy.operator import checks_as_dicts
    from convergence.tenancy.operator import dryrun as run_checks

    services, org = _services_and_org(org)
    checks = run_checks(services, org, plan, admin_email)
    if as_json:
        click.echo(json.dumps({"org": org, "ready": all(c.ok for c in checks), "checks": checks_as_dicts(checks)},
                              indent=2))
    else:
        for check in checks:
            click.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
    if not all(c.ok for c in checks):
        raise SystemExit(1)


@orgs.command()
@click.argument("org")
@click.option("--plan", default="STARTER", show_default=True, help="STARTER, PROFESSIONAL or SCALE.")
@click.option("--status", default="ACTIVE", show_default=True, help="Subscription status: ACTIVE or TRIAL.")
@click.option("--company-name", default=None)
@click.option("--admin-email", default=None, help="Who hears about the org's failed runs.")
def onboard(org: str, plan: str, status: str, company_name: str | None, admin_email: str | None) -> None:
    """Create ORG: profile, API key (shown once), subscription, quota row and its dataset; audited."""
    from convergence.tenancy.onboarding import OrgAlreadyExists, onboard_org

    services, org = _services_and_org(org)
    try:
        result = onboard_org(services.bigquery, services.settings, services.cipher, org, plan.upper(),
                             company_name=company_name, admin_email=admin_email,
                             subscription_status=status.upper())
    except (OrgAlreadyExists, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"org {org} onboarded: plan {result.plan}, subscription {result.subscription_status}, "
               f"dataset {services.settings.org_dataset(org)}")
    click.echo(f"API key (shown once, store it now): {result.api_key}")


@orgs.command()
@click.argument("org")
@output_options
def status(org: str, as_json: bool) -> None:
    """ORG's profile, subscription and today's quota, and what the gate would answer now."""
    from convergence.tenancy.operator import standing

    services, org = _services_and_org(org)
    found = standing(services, org)
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
        return
    gate = found["gate"]
    click.echo(f"org {org}: {found['org_status'] or 'not onboarded'}; plan {found['plan'] or '-'}, subscription "
               f"{found['subscription_status'] or '-'}; {found['runs_today']} run(s) today")
    click.echo(f"gate: {'allowed' if gate['allowed'] else 'REFUSED ' + gate['code']}: {gate['message']}")


def _change(org: str, *, status: str | None = None, billing_status: str | None = None,
            reason: str | None = None) -> None:
    import getpass

    from convergence.tenancy.operator import change_status

    services, org = _services_and_org(org)
    try:
        change = change_status(services, org, status=status, billing_status=billing_status, reason=reason,
                               actor=f"cli:{getpass.getuser()}")
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"org {org}: subscription {change['from']} -> {change['to']} (audited)")


@orgs.command()
@click.argument("org")
@click.option("--reason", default=None, help="Kept in the audit log.")
def suspend(org: str, reason: str | None) -> None:
    """Set ORG's subscription to SUSPENDED: its runs are refused until it is resumed."""
    _change(org, status="SUSPENDED", reason=reason)


@orgs.command()
@click.argument("org")
@click.option("--reason", default=None, help="Kept in the audit log.")
def resume(org: str, reason: str | None) -> None:
    """Set ORG's subscription back to ACTIVE."""
    _change(org, status="ACTIVE", reason=reason)


@orgs.command("set-billing-status")
@click.argument("org")
@click.argument("billing_status")
def set_billing_status(org: str, billing_status: str) -> None:
    """Report the billing system's status (trialing, active, past_due, canceled, ...) for ORG; it maps to
    the backend status through configs/setup/plans.yml."""
    _change(org, billing_status=billing_status)


@orgs.group()
def pipelines() -> None:
    """Which pipelines an org runs, with which parameters and on which schedule."""


@dataclass
class _Context:
    org: str
    central: Any
    loader: Any
    catalog: dict[str, Any]  # pipeline ref -> PipelineConfig

    def pipeline(self, ref: str) -> str:
        """The ref as the fan-out and run requests name it; unknown or invalid pipelines are refused."""
        from convergence.pipeline.errors import ConfigError
        from convergence.publisher.fanout import pipeline_ref_for

        try:
            self.loader.load(ref)
            normalized = pipeline_ref_for(self.loader.path_for(ref), self.loader.configs_dir)
        except ConfigError as error:
            raise click.BadParameter(str(error), param_hint="PIPELINE") from None
        if normalized is None:
            raise click.BadParameter(f"{ref}: not a pipeline a run can name", param_hint="PIPELINE")
        return normalized

    def configs(self) -> Any:
        from convergence.tenancy import pipeline_configs

        return pipeline_configs.read(self.central, sorted(self.catalog), org=self.org)


def _context(org: str) -> _Context:
    from convergence.cli import load_settings_or_exit
    from convergence.pipeline import PipelineLoader
    from convergence.publisher.fanout import addressable_pipelines
    from convergence.tenancy.central import Central
    from convergence.warehouse.client import make_client
    from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug

    try:
        org = validate_org_slug(org)
    except InvalidIdentifier as error:
        raise click.BadParameter(str(error), param_hint="ORG") from None
    settings = load_settings_or_exit()
    central = Central(make_client(settings), settings)
    found = central.queries.rows("SELECT COUNT(*) AS n FROM " + central.ref("org_profiles") +  # noqa: S608
                                 " WHERE `org_slug` = @org", {"org": org})
    if not found or not found[0]["n"]:
        raise click.ClickException(f"org {org} is not onboarded")
    loader = PipelineLoader(settings.configs_dir)
    return _Context(org, central, loader, dict(addressable_pipelines(loader)))


def _row(ctx: _Context, pipeline: str, config: Any) -> dict[str, Any]:
    yaml = ctx.catalog.get(pipeline)
    schedule = yaml.schedule if yaml is not None else None
    if config is not None and config.cron is not None:
        effective: dict[str, Any] | None = {"source": "org", "cron": config.cron, "timezone": config.timezone}
    elif schedule is not None:
        effective = {"source": "yaml", "type": schedule.type, "time": schedule.time, "timezone": schedule.timezone}
    else:
        effective = None
    return {
        "pipeline": pipeline, "enabled": config.enabled if config is not None else True,
        "schedule": effective, "parameters": dict(config.parameters) if config is not None else {},
        "default_parameters": dict(schedule.parameters) if schedule is not None else {},
        "known": yaml is not None,
    }


def _schedule_text(schedule: dict[str, Any] | None) -> str:
    if schedule is None:
        return "-"
    if schedule["source"] == "org":
        return f"{schedule['cron']} {schedule['timezone']} (org)"
    return f"{schedule['type']} {schedule['time']} {schedule['timezone']}"


def _echo(rows: list[dict[str, Any]], org: str, as_json: bool) -> None:
    from convergence.commands.runs import render_table

    if as_json:
        click.echo(json.dumps({"org": org, "pipelines": rows}, indent=2, sort_keys=True))
        return
    click.echo(render_table(
        ["PIPELINE", "ENABLED", "SCHEDULE", "PARAMETERS"],
        [[row["pipeline"], "yes" if row["enabled"] else "no", _schedule_text(row["schedule"]),
          json.dumps(row["parameters"], sort_keys=True) if row["parameters"] else "-"] for row in rows]))


@pipelines.command("list")
@click.argument("org")
@output_options
def list_pipelines(org: str, as_json: bool) -> None:
    """Every pipeline for ORG: enabled, the schedule it runs on, the org's own parameters."""
    ctx = _context(org)
    configs = ctx.configs()
    names = sorted(set(ctx.catalog) | {config.pipeline for config in configs})
    _echo([_row(ctx, name, configs.get(ctx.org, name)) for name in names], ctx.org, as_json)


def _set_enabled(org: str, pipeline: str, enabled: bool, as_json: bool) -> None:
    from convergence.tenancy import pipeline_configs

    ctx = _context(org)
    ref = ctx.pipeline(pipeline)
    pipeline_configs.write_config(ctx.central, ctx.org, ref, enabled=enabled,
                                  pipeline_id=ctx.catalog[ref].run_pipeline_id(ctx.org))
    ctx.central.audit(ctx.org, "PIPELINE_ENABLED" if enabled else "PIPELINE_DISABLED", resource_type="pipeline",
                      resource_id=ref, actor_type="ROOT")
    _echo([_row(ctx, ref, ctx.configs().get(ctx.org, ref))], ctx.org, as_json)


@pipelines.command()
@click.argument("org")
@click.argument("pipeline", shell_complete=complete_pipelines)
@output_options
def enable(org: str, pipeline: str, as_json: bool) -> None:
    """ORG runs PIPELINE again (scheduled and requested runs)."""
    _set_enabled(org, pipeline, True, as_json)


@pipelines.command()
@click.argument("org")
@click.argument("pipeline", shell_complete=complete_pipelines)
@output_options
def disable(org: str, pipeline: str, as_json: bool) -> None:
    """ORG no longer runs PIPELINE: no scheduled runs, requested runs refused (PIPELINE_DISABLED)."""
    _set_enabled(org, pipeline, False, as_json)


def _parse_params(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{value[:60]!r}: give NAME=VALUE", param_hint="--param")
        out[name.strip()] = text
    return out


@pipelines.command("set")
@click.argument("org")
@click.argument("pipeline", shell_complete=complete_pipelines)
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="The org's own run parameter, over the YAML's (repeatable; may use {yesterday}, {month}, ...).")
@click.option("--schedule", "schedule_spec", default=None,
              help="The org's own schedule: a cron expression ('30 6 * * 1-5'), HH:MM on the YAML's schedule type, "
                   "or 'default' for the YAML's.")
@click.option("--timezone", "zone", default=None, help="IANA time zone of the org's schedule (e.g. Europe/Paris).")
@output_options
def set_pipeline(org: str, pipeline: str, params: tuple[str, ...], schedule_spec: str | None, zone: str | None,
                 as_json: bool) -> None:
    """The org's own parameters and schedule for PIPELINE."""
    from convergence.pipeline.context import PlaceholderError, resolve_placeholders
    from convergence.publisher.schedule import slot_names
    from convergence.tenancy import pipeline_configs as pc

    if not params and schedule_spec is None and zone is None:
        raise click.UsageError("nothing to set: give --param, --schedule and/or --timezone")
    ctx = _context(org)
    ref = ctx.pipeline(pipeline)
    yaml = ctx.catalog[ref]
    current = ctx.configs().get(ctx.org, ref)
    try:
        timezone = pc.validate_timezone(zone) if zone else None
        parameters = None
        if params:
            parameters = pc.validate_parameters({**(current.parameters if current else {}), **_parse_params(params)})
            resolve_placeholders(parameters, slot_names(datetime.now(UTC), "UTC"))
        cron: str | None = None
        active = True
        if schedule_spec is not None and schedule_spec.strip().lower() == "default":
            active = False  # the schedule row is kept, inactive; nothing to write when there is none
            if current is not None and current.has_schedule_row:
                cron = current.cron or pc.schedule_cron("00:00", yaml.schedule)
        elif schedule_spec is not None:
            cron = pc.schedule_cron(schedule_spec, yaml.schedule)
        elif timezone is not None:  # a new zone for the org's schedule, or for the YAML's time and type
            if current is not None and current.cron is not None:
                cron = current.cron
            elif yaml.schedule is not None:
                cron = pc.schedule_cron(yaml.schedule.time, yaml.schedule)
            else:
                raise click.UsageError(f"{ref} has no schedule of its own: give --schedule with --timezone")
    except pc.OrgConfigError as error:
        raise click.BadParameter(str(error)) from None
    except PlaceholderError as error:
        raise click.BadParameter(str(error), param_hint="--param") from None
    if parameters is not None:
        pc.write_config(ctx.central, ctx.org, ref, parameters=parameters, pipeline_id=yaml.run_pipeline_id(ctx.org))
    if cron is not None:
        zone_name = timezone or (current.timezone if current and current.cron else None) or \
            (yaml.schedule.timezone if yaml.schedule else "UTC")
        pc.write_schedule(ctx.central, ctx.org, ref, cron=cron, timezone=zone_name, active=active)
    ctx.central.audit(ctx.org, "PIPELINE_CONFIG_SET", resource_type="pipeline", resource_id=ref, actor_type="ROOT",
                      details={"parameters": sorted(parameters or ()), "schedule": cron if active else "default",
                               "timezone": timezone})  # parameter names only: values may be sensitive
    _echo([_row(ctx, ref, ctx.configs().get(ctx.org, ref))], ctx.org, as_json)

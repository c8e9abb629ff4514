"""Scheduler fan-out: one tick -> one run request per (eligible org, due pipeline, schedule slot).

Run ids are deterministic per org, pipeline and slot, and a ledger remembers what was published, so a
redelivered or duplicated tick publishes nothing new. Requests go out in chunks through the publisher's
batches; each chunk is looked up in the ledger first and recorded after Pub/Sub confirmed it.

Per-org configuration (tenancy.pipeline_configs, read in one query per tick for every org): an org that
disabled a pipeline gets no run of it; an org with its own schedule gets the runs of its cron (in its
time zone) instead of the YAML's slots; an org's own parameters are merged over the YAML's.

Cost per tick: one eligibility query per integration named by a due pipeline, one org-config query, one
ledger lookup and one ledger insert per chunk of `chunk` requests. Requests of one (pipeline, slot) differ
only by org, so one request is built and schema-checked per (pipeline, slot) and copied per org (the copied fields are
checked against the schema's own patterns): building 30,000 requests costs ~0.5 s instead of ~3.5 s. Orgs
with their own parameters or schedule get a request of their own (built and checked in full).
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import structlog

from convergence.pipeline import PipelineLoader
from convergence.pipeline.context import PlaceholderError, resolve_placeholders
from convergence.pipeline.errors import ConfigError
from convergence.pipeline.models import PipelineConfig
from convergence.pipeline.validation import pipeline_files
from convergence.publisher.requests import PublishError
from convergence.publisher.schedule import due_slots, schedule_parameters, slot_names
from convergence.schemas import RUN_REQUEST_V1, MessageRejected, RunRequest, Trigger, deterministic_run_id, schema
from convergence.tenancy.pipeline_configs import (
    OrgConfigError,
    OrgPipelineConfig,
    OrgPipelineConfigs,
    cron_slots,
    validate_parameters,
)

log = structlog.get_logger(__name__)
CHUNK = 5000
# Two chunks are in the publisher at once: together they must fit its flow-control window
# (publisher.requests.REQUEST_FLOW, 10,000 messages). Measured: 10,000-request chunks stall on it (60 s).
MAX_CHUNK = 5000
REQUESTED_BY = "scheduler"
_ORG_SLUG = re.compile(schema(RUN_REQUEST_V1)["properties"]["org_slug"]["pattern"])


class Ledger(Protocol):
    def already_published(self, run_ids: Sequence[str], since: datetime | None = None) -> set[str]: ...

    def record(self, requests: Sequence[RunRequest], slots: Mapping[str, datetime]) -> None: ...


class Publisher(Protocol):
    """publisher.RequestPublisher: queue one request into the current batch, resolve to the message id."""

    def publish_request(self, request: RunRequest) -> Future[str]: ...


EligibleOrgs = Callable[[str | None], Iterable[str]]
OrgConfigs = Callable[[Sequence[str], Sequence[str]], OrgPipelineConfigs]  # (pipelines, orgs) -> their configs


@dataclass(frozen=True)
class DueRun:
    """One (pipeline, slot) that is due in a tick's window, with its default parameters."""

    pipeline: str
    integration: str | None
    slot: datetime
    parameters: dict[str, str]

    @property
    def slot_text(self) -> str:
        return self.slot.strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class OrgDueRun:
    """One slot of an org's own schedule in the tick's window."""

    org: str
    pipeline: str
    integration: str | None
    slot: datetime
    config: OrgPipelineConfig


@dataclass
class FanOutReport:
    tick_at: datetime
    due: list[tuple[str, str]] = field(default_factory=list)  # (pipeline, slot)
    orgs: dict[str, int] = field(default_factory=dict)  # integration (or "-") -> eligible orgs
    planned: int = 0  # requests for the due slots and eligible orgs
    published: int = 0
    skipped_duplicates: int = 0
    published_by_pipeline: dict[str, int] = field(default_factory=dict)
    org_configs: int = 0  # (org, pipeline) configs read
    disabled: int = 0  # runs not planned: the org disabled the pipeline
    rescheduled: int = 0  # YAML slots not planned: the org has its own schedule
    own_schedule: int = 0  # runs planned from orgs' own schedules
    own_parameters: int = 0  # runs planned with the org's own parameters
    invalid: int = 0  # runs not planned: the org's config does not make a valid request (logged)
    seconds: dict[str, float] = field(default_factory=dict)  # eligibility, build, ledger, publish, record
    dry_run: bool = False

    def add_time(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def summary(self) -> str:
        verb = "would publish" if self.dry_run else "published"
        return (f"tick {self.tick_at:%Y-%m-%dT%H:%MZ}: {len(self.due)} due pipeline slot(s), "
                f"{self.published} run request(s) {verb}, {self.skipped_duplicates} already published")

    def to_dict(self) -> dict[str, Any]:
        return {
            "tick_at": self.tick_at.isoformat(), "due": [{"pipeline": p, "slot": s} for p, s in self.due],
            "eligible_orgs": self.orgs, "planned": self.planned, "published": self.published,
            "skipped_duplicates": self.skipped_duplicates, "published_by_pipeline": self.published_by_pipeline,
            "org_configs": self.org_configs, "disabled": self.disabled, "rescheduled": self.rescheduled,
            "own_schedule": self.own_schedule, "own_parameters": self.own_parameters, "invalid": self.invalid,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()}, "dry_run": self.dry_run,
        }


def pipeline_ref_for(path: Path, configs_dir: Path) -> str | None:
    """configs/a/b/c.yml -> 'a/b/c'; configs/a/c.yml -> 'a//c'; anything else is not addressable."""
    parts = path.relative_to(configs_dir).with_suffix("").parts
    if len(parts) == 3:
        return "/".join(parts)
    if len(parts) == 2:
        return f"{parts[0]}//{parts[1]}"
    return None


def scheduled_pipelines(loader: PipelineLoader) -> Iterator[tuple[str, PipelineConfig]]:
    for ref, config in addressable_pipelines(loader):
        if config.schedule is not None:
            yield ref, config


def addressable_pipelines(loader: PipelineLoader) -> Iterator[tuple[str, PipelineConfig]]:
    """Every pipeline a run request can name (with a schedule or not: an org may give it one)."""
    for path in pipeline_files(loader.configs_dir):
        ref = pipeline_ref_for(path, loader.configs_dir)
        if ref is None:
            continue
        try:
            config = loader.load_file(path)
        except ConfigError as error:
            log.error("scheduled pipeline skipped: invalid config", pipeline=ref, error=str(error))
            continue
        yield ref, config


def scheduled_run_id(org_slug: str, pipeline: str, slot: datetime) -> str:
    """The one run_id of (org, pipeline, slot): every copy of a tick derives the same."""
    return deterministic_run_id(org_slug, pipeline, slot.astimezone(UTC).isoformat(), prefix="sched")


class TickFanOut:
    def __init__(self, loader: PipelineLoader, publisher: Publisher, eligible_orgs: EligibleOrgs, ledger: Ledger,
                 interval: timedelta = timedelta(hours=1), chunk: int = CHUNK, publish_timeout: float = 120.0,
                 org_configs: OrgConfigs | None = None):
        if not 1 <= chunk <= MAX_CHUNK:
            raise ValueError(f"chunk must be between 1 and {MAX_CHUNK}")
        self.loader = loader
        self.publisher = publisher
        self.eligible_orgs = eligible_orgs
        self.ledger = ledger
        self.interval = interval
        self.chunk = chunk
        self.publish_timeout = publish_timeout
        self.org_configs = org_configs  # None: every org gets the YAML's defaults

    def due(self, tick_at: datetime) -> list[DueRun]:
        """Every (pipeline, slot) of the YAML schedules in the tick's window (tick - interval, tick]."""
        return self._due(dict(addressable_pipelines(self.loader)), tick_at)

    def _due(self, catalog: Mapping[str, PipelineConfig], tick_at: datetime) -> list[DueRun]:
        runs: list[DueRun] = []
        for ref, config in catalog.items():
            if config.schedule is None:
                continue
            for slot in due_slots(config.schedule, tick_at - self.interval, tick_at):
                runs.append(DueRun(ref, config.integration, slot, schedule_parameters(config.schedule, slot)))
        return runs

    def _own_schedule_runs(self, configs: OrgPipelineConfigs, catalog: Mapping[str, PipelineConfig],
                           tick_at: datetime) -> list[OrgDueRun]:
        runs: list[OrgDueRun] = []
        for config in configs:
            pipeline = catalog.get(config.pipeline)
            if pipeline is None or not config.enabled or config.cron is None or config.error:
                continue
            for slot in cron_slots(config.cron, config.timezone, tick_at - self.interval, tick_at):
                runs.append(OrgDueRun(config.org_slug, config.pipeline, pipeline.integration, slot, config))
        return sorted(runs, key=lambda run: (run.pipeline, run.slot, run.org))

    def eligible_and_configs(self, catalog: Mapping[str, PipelineConfig], due: list[DueRun], tick_at: datetime,
                             report: FanOutReport) -> tuple[dict[str | None, list[str]], OrgPipelineConfigs,
                                                            list[OrgDueRun]]:
        """The eligibility queries of the YAML's due pipelines, side by side; the org configs (one query)
        for the orgs eligible without an integration (every integration's orgs are among them), once those
        are known; then eligibility for any integration only orgs' own schedules need."""
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="eligibility") as pool:
            integrations = list(dict.fromkeys(run.integration for run in due))
            if self.org_configs is not None and None not in integrations:
                integrations.insert(0, None)
            asked = {integration: pool.submit(lambda i: _valid_orgs(self.eligible_orgs(i)), integration)
                     for integration in integrations}
            configs = OrgPipelineConfigs()
            if self.org_configs is not None:
                configs = self.org_configs(sorted(catalog), asked[None].result())
            own = self._own_schedule_runs(configs, catalog, tick_at)
            for integration in dict.fromkeys(run.integration for run in own):
                if integration not in asked:
                    asked[integration] = pool.submit(lambda i: _valid_orgs(self.eligible_orgs(i)), integration)
            orgs = {integration: future.result() for integration, future in asked.items()}
        report.add_time("eligibility", time.perf_counter() - started)
        report.org_configs = len(configs)
        report.orgs.update({integration or "-": len(found) for integration, found in orgs.items()})
        return orgs, configs, own

    def requests_for(self, tick_at: datetime, report: FanOutReport) -> Iterator[tuple[RunRequest, datetime]]:
        catalog = dict(addressable_pipelines(self.loader))
        due = self._due(catalog, tick_at)
        report.due.extend((run.pipeline, run.slot_text) for run in due)
        orgs_by_integration, configs, own = self.eligible_and_configs(catalog, due, tick_at, report)
        own_templates: dict[tuple[str, datetime], RunRequest] = {}
        for run in due:
            orgs = orgs_by_integration[run.integration]
            template: RunRequest | None = None
            yaml_schedule = catalog[run.pipeline].schedule
            assert yaml_schedule is not None
            for org in orgs:
                run_id = scheduled_run_id(org, run.pipeline, run.slot)
                trace_id = run_id.removeprefix("sched_")
                config = configs.get(org, run.pipeline)
                if config is not None and not config.enabled:
                    report.disabled += 1
                    continue
                if config is not None and config.error:
                    report.invalid += 1
                    continue
                if config is not None and config.own_schedule:
                    report.rescheduled += 1
                    continue
                report.planned += 1
                if config is not None and config.parameters:
                    request = self._own_request(org, run.pipeline, run.slot, run.parameters, [config.parameters],
                                                yaml_schedule.timezone, tick_at, report, own_templates)
                    if request is not None:
                        report.own_parameters += 1
                        yield request, run.slot
                    continue
                if template is None:
                    template = RunRequest.create(
                        org, run.pipeline, run.parameters, Trigger.SCHEDULED, requested_by=REQUESTED_BY,
                        run_id=run_id, trace_id=trace_id, requested_at=tick_at,
                    )
                    yield template, run.slot
                    continue
                yield _copy_for(template, org, run_id, trace_id), run.slot
        eligible_sets = {integration: set(orgs) for integration, orgs in orgs_by_integration.items()}
        for org_run in own:
            if org_run.org not in eligible_sets.get(org_run.integration, ()):
                continue
            report.planned += 1
            config = org_run.config
            yaml_schedule = catalog[org_run.pipeline].schedule
            base = schedule_parameters(yaml_schedule.model_copy(update={"timezone": config.timezone}), org_run.slot) \
                if yaml_schedule is not None else {}
            request = self._own_request(org_run.org, org_run.pipeline, org_run.slot, base,
                                        [config.parameters, config.schedule_parameters], config.timezone,
                                        tick_at, report, own_templates)
            if request is not None:
                report.own_schedule += 1
                report.own_parameters += bool(config.parameters or config.schedule_parameters)
                yield request, org_run.slot

    def _own_request(self, org: str, pipeline: str, slot: datetime, base: Mapping[str, str],
                     overrides: list[Mapping[str, str]], timezone: str, tick_at: datetime,
                     report: FanOutReport, templates: dict[tuple[str, datetime], RunRequest]) -> RunRequest | None:
        """A request of one org's own: the YAML's (resolved) parameters, then the org's, their placeholders
        read in `timezone`. A config that makes no valid request is logged and skipped (never fails the tick).

        The first of a (pipeline, slot) is built and schema-checked in full; the next are copies whose
        parameters pass the schema's own parameter rules (validate_parameters reads them from the schema):
        measured, 10,000 own-parameter requests cost ~1 s each way in full."""
        names = slot_names(slot, timezone)
        run_id = scheduled_run_id(org, pipeline, slot)
        trace_id = run_id.removeprefix("sched_")
        try:
            parameters = dict(base)
            for layer in overrides:
                parameters.update(resolve_placeholders(dict(layer), names))
            template = templates.get((pipeline, slot))
            if template is None:
                request = RunRequest.create(org, pipeline, parameters, Trigger.SCHEDULED, requested_by=REQUESTED_BY,
                                            run_id=run_id, trace_id=trace_id, requested_at=tick_at)
                templates[(pipeline, slot)] = request
                return request
            if not _ORG_SLUG.fullmatch(org):
                raise OrgConfigError(f"invalid org slug {org[:60]!r}")
            copy = template.model_copy(update={"org_slug": org, "run_id": run_id, "trace_id": trace_id,
                                               "parameters": validate_parameters(parameters)})
            copy._schema_checked = True  # every changed field was checked, as in _copy_for
            return copy
        except (PlaceholderError, MessageRejected, OrgConfigError) as error:
            report.invalid += 1
            log.error("scheduled run skipped: the org's pipeline config makes no valid request", org_slug=org,
                      pipeline=pipeline, error=str(error)[:300])
            return None

    def fan_out(self, tick_at: datetime, *, dry_run: bool = False) -> FanOutReport:
        """Publish the tick's requests; raises PublishError (after recording what did go out) when Pub/Sub
        refused some: the redelivered tick then publishes only the rest.

        Pipelined: while chunk k is in the publisher's batches, chunk k+1 is built and looked up in the
        ledger, and chunk k-1 is recorded in the ledger by a background thread."""
        tick_at = tick_at.astimezone(UTC) if tick_at.tzinfo else tick_at.replace(tzinfo=UTC)
        report = FanOutReport(tick_at=tick_at, dry_run=dry_run)
        started = time.perf_counter()
        failures: dict[str, BaseException] = {}
        published_ids: list[str] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-record") as recorder:
            recording: list[Future[None]] = []
            inflight: deque[_Chunk] = deque()
            for batch in _chunks(self.requests_for(tick_at, report), self.chunk):
                chunk = self._send(batch, report, dry_run)
                if chunk is not None:
                    inflight.append(chunk)
                while len(inflight) > 1:  # keep one chunk in flight while the next is prepared
                    self._settle(inflight.popleft(), report, recorder, recording, failures, published_ids)
            while inflight:
                self._settle(inflight.popleft(), report, recorder, recording, failures, published_ids)
            waited = time.perf_counter()
            for future in recording:
                future.result()  # a ledger write that failed fails the tick (nack: it comes back)
            report.add_time("record_wait", time.perf_counter() - waited)
        total = time.perf_counter() - started
        report.seconds["build"] = max(0.0, total - sum(v for k, v in report.seconds.items() if k != "record"))
        report.seconds["total"] = total
        log.info("tick fanned out", tick_at=tick_at.isoformat(), due=len(report.due), planned=report.planned,
                 published=report.published, skipped=report.skipped_duplicates, dry_run=dry_run,
                 seconds={k: round(v, 3) for k, v in report.seconds.items()})
        if failures:
            raise PublishError(failures, published_ids)
        return report

    def _send(self, batch: list[tuple[RunRequest, datetime]], report: FanOutReport, dry_run: bool) -> _Chunk | None:
        """Ledger lookup, then hand the fresh requests to the publisher (returns at once: futures)."""
        started = time.perf_counter()
        since = min(slot for _, slot in batch)
        seen = self.ledger.already_published([request.run_id for request, _ in batch], since=since)
        report.add_time("ledger", time.perf_counter() - started)
        fresh = [(request, slot) for request, slot in batch if request.run_id not in seen]
        report.skipped_duplicates += len(batch) - len(fresh)
        if not fresh:
            return None
        if dry_run:
            self._count([request for request, _ in fresh], report)
            return None
        started = time.perf_counter()
        sent = [(request, slot, self.publisher.publish_request(request)) for request, slot in fresh]
        report.add_time("publish", time.perf_counter() - started)
        return sent

    def _settle(self, chunk: _Chunk, report: FanOutReport, recorder: ThreadPoolExecutor,
                recording: list[Future[None]], failures: dict[str, BaseException], published_ids: list[str]) -> None:
        """Wait for a chunk's publishes; what Pub/Sub confirmed is recorded (in the background)."""
        started = time.perf_counter()
        futures_wait([future for _, _, future in chunk], timeout=self.publish_timeout)
        report.add_time("publish", time.perf_counter() - started)
        published: list[RunRequest] = []
        slots: dict[str, datetime] = {}
        for request, slot, future in chunk:
            error = future.exception(timeout=0) if future.done() else TimeoutError("publish not confirmed")
            if error is None:
                published.append(request)
                slots[request.run_id] = slot
            else:
                failures[request.run_id] = error
        if not published:
            return
        published_ids.extend(request.run_id for request in published)
        self._count(published, report)
        # Published first, then recorded: a crash in between re-publishes (consumers dedupe by run_id),
        # never loses a run.

        def record() -> None:
            began = time.perf_counter()
            self.ledger.record(published, slots)
            report.add_time("record", time.perf_counter() - began)

        recording.append(recorder.submit(record))

    @staticmethod
    def _count(requests: list[RunRequest], report: FanOutReport) -> None:
        report.published += len(requests)
        for request in requests:
            report.published_by_pipeline[request.pipeline] = report.published_by_pipeline.get(request.pipeline, 0) + 1


_Chunk = list[tuple[RunRequest, datetime, "Future[str]"]]


def _chunks(items: Iterable[tuple[RunRequest, datetime]], size: int) -> Iterator[list[tuple[RunRequest, datetime]]]:
    batch: list[tuple[RunRequest, datetime]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _valid_orgs(orgs: Iterable[str]) -> list[str]:
    """Sorted, de-duplicated; a slug the run request schema would refuse is logged and left out (one bad
    row must not fail, and endlessly redeliver, the whole tick)."""
    valid: set[str] = set()
    for org in orgs:
        if isinstance(org, str) and _ORG_SLUG.fullmatch(org):
            valid.add(org)
        else:
            log.error("org skipped by the scheduler: invalid org slug", org_slug=str(org)[:60])
    return sorted(valid)


def _copy_for(template: RunRequest, org_slug: str, run_id: str, trace_id: str) -> RunRequest:
    """The template for another org. Only org_slug, run_id and trace_id change: org_slug was checked against
    the schema's pattern (_valid_orgs), run_id/trace_id are sha256 hex made above, so the copy is as valid
    as the template the JSON Schema accepted."""
    copy = template.model_copy(update={"org_slug": org_slug, "run_id": run_id, "trace_id": trace_id})
    copy._schema_checked = True  # see the docstring: every changed field was checked
    return copy


__all__ = ["CHUNK", "DueRun", "EligibleOrgs", "FanOutReport", "Ledger", "OrgConfigs", "OrgDueRun", "TickFanOut",
           "addressable_pipelines", "pipeline_ref_for", "scheduled_pipelines", "scheduled_run_id"]

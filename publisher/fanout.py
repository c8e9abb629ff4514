"""Scheduler fan-out: one tick -> one run request per (eligible org, due pipeline, schedule slot).

Run ids are deterministic per org, pipeline and slot, and a ledger remembers what was published, so a
redelivered or duplicated tick publishes nothing new. Requests go out in batches of the publisher.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import structlog

from pipeline import PipelineLoader
from pipeline.errors import ConfigError
from pipeline.models import PipelineConfig
from pipeline.validation import pipeline_files
from publisher.schedule import due_slots, schedule_parameters
from schemas import RunRequest, Trigger, deterministic_run_id

log = structlog.get_logger(__name__)
CHUNK = 5000


class Ledger(Protocol):
    def already_published(self, run_ids: list[str]) -> set[str]: ...

    def record(self, requests: list[RunRequest], slots: dict[str, datetime]) -> None: ...


EligibleOrgs = Callable[[str | None], Iterable[str]]


@dataclass
class FanOutReport:
    tick_at: datetime
    due: list[tuple[str, str]] = field(default_factory=list)  # (pipeline, slot)
    published: int = 0
    skipped_duplicates: int = 0

    def summary(self) -> str:
        return (f"tick {self.tick_at:%Y-%m-%dT%H:%MZ}: {len(self.due)} due pipeline slot(s), "
                f"{self.published} run request(s) published, {self.skipped_duplicates} already published")


def pipeline_ref_for(path: Path, configs_dir: Path) -> str | None:
    """configs/a/b/c.yml -> 'a/b/c'; configs/a/c.yml -> 'a//c'; anything else is not addressable."""
    parts = path.relative_to(configs_dir).with_suffix("").parts
    if len(parts) == 3:
        return "/".join(parts)
    if len(parts) == 2:
        return f"{parts[0]}//{parts[1]}"
    return None


def scheduled_pipelines(loader: PipelineLoader) -> Iterator[tuple[str, PipelineConfig]]:
    for path in pipeline_files(loader.configs_dir):
        ref = pipeline_ref_for(path, loader.configs_dir)
        if ref is None:
            continue
        try:
            config = loader.load_file(path)
        except ConfigError as error:
            log.error("scheduled pipeline skipped: invalid config", pipeline=ref, error=str(error))
            continue
        if config.schedule is not None:
            yield ref, config


class TickFanOut:
    def __init__(self, loader: PipelineLoader, publisher, eligible_orgs: EligibleOrgs, ledger: Ledger,
                 interval: timedelta = timedelta(hours=1)):
        self.loader = loader
        self.publisher = publisher
        self.eligible_orgs = eligible_orgs
        self.ledger = ledger
        self.interval = interval

    def requests_for(self, tick_at: datetime, report: FanOutReport) -> Iterator[tuple[RunRequest, datetime]]:
        orgs_by_integration: dict[str | None, list[str]] = {}
        for ref, config in scheduled_pipelines(self.loader):
            assert config.schedule is not None
            for slot in due_slots(config.schedule, tick_at - self.interval, tick_at):
                report.due.append((ref, slot.strftime("%Y-%m-%dT%H:%MZ")))
                if config.integration not in orgs_by_integration:
                    orgs_by_integration[config.integration] = sorted(self.eligible_orgs(config.integration))
                parameters = schedule_parameters(config.schedule, slot)
                for org in orgs_by_integration[config.integration]:
                    run_id = deterministic_run_id(org, ref, slot.isoformat(), prefix="sched")
                    request = RunRequest.create(
                        org, ref, parameters, Trigger.SCHEDULED, requested_by="scheduler", run_id=run_id,
                        trace_id=run_id.removeprefix("sched_"), requested_at=tick_at,
                    )
                    yield request, slot

    def fan_out(self, tick_at: datetime) -> FanOutReport:
        report = FanOutReport(tick_at=tick_at)
        batch: list[tuple[RunRequest, datetime]] = []
        for item in self.requests_for(tick_at, report):
            batch.append(item)
            if len(batch) >= CHUNK:
                self._publish(batch, report)
                batch = []
        if batch:
            self._publish(batch, report)
        log.info("tick fanned out", due=len(report.due), published=report.published,
                 skipped=report.skipped_duplicates)
        return report

    def _publish(self, batch: list[tuple[RunRequest, datetime]], report: FanOutReport) -> None:
        seen = self.ledger.already_published([request.run_id for request, _ in batch])
        fresh = [(request, slot) for request, slot in batch if request.run_id not in seen]
        report.skipped_duplicates += len(batch) - len(fresh)
        if not fresh:
            return
        requests = [request for request, _ in fresh]
        # Published first, then recorded: a crash in between re-publishes (consumers dedupe by run_id),
        # never loses a run.
        self.publisher.publish_many(requests)
        self.ledger.record(requests, {request.run_id: slot for request, slot in fresh})
        report.published += len(requests)

"""Stage timings from the consumer's /metrics: deltas of its histograms between two scrapes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from bench.consume import PIPELINE

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# (label in the report, histogram, label filter, what one observation is)
STAGES: tuple[tuple[str, str, Mapping[str, str], str], ...] = (
    ("slot wait", "convergence_slot_wait_seconds", {}, "run"),
    ("admission wait", "convergence_admission_wait_seconds", {}, "run"),
    ("run (executor + observers)", "convergence_run_duration_seconds", {"pipeline": PIPELINE}, "run"),
    ("run-log group commit", "convergence_runlog_commit_seconds", {}, "commit"),
    ("final event publish", "convergence_event_publish_seconds", {}, "run"),
)


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **where: str) -> float:
    """Sum of the samples of `name` whose labels include `where`."""
    return sum(value for (metric, labels), value in samples.items()
               if metric == name and all(dict(labels).get(k) == v for k, v in where.items()))


def by_label(samples: Samples, name: str, label: str, **where: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (metric, labels), value in samples.items():
        as_dict = dict(labels)
        if metric == name and label in as_dict and all(as_dict.get(k) == v for k, v in where.items()):
            out[as_dict[label]] = out.get(as_dict[label], 0.0) + value
    return out


def count_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {key: round(value - before.get(key, 0.0)) for key, value in sorted(after.items())
            if round(value - before.get(key, 0.0))}


@dataclass
class Histogram:
    """One histogram's change between two scrapes (series matching the filter summed)."""

    count: float
    sum: float
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), ascending, +Inf last

    @classmethod
    def delta(cls, before: Samples, after: Samples, name: str, where: Mapping[str, str]) -> Histogram:
        def buckets(samples: Samples) -> dict[float, float]:
            return {float(le): value for le, value in by_label(samples, f"{name}_bucket", "le", **where).items()}

        b, a = buckets(before), buckets(after)
        return cls(count=total(after, f"{name}_count", **where) - total(before, f"{name}_count", **where),
                   sum=total(after, f"{name}_sum", **where) - total(before, f"{name}_sum", **where),
                   buckets=[(le, a[le] - b.get(le, 0.0)) for le in sorted(a)])

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Linear within the bucket holding rank q*count (histogram_quantile's rule); the highest finite
        bound when the rank falls in +Inf."""
        if not self.count or not self.buckets:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0.0
        for upper, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(upper):
                    return lower
                inside = cumulative - below
                return lower + (upper - lower) * ((rank - below) / inside if inside else 0.0)
            lower, below = upper, cumulative
        return lower


def stage_timings(before: Samples, after: Samples) -> dict[str, dict[str, float | str]]:
    out: dict[str, dict[str, float | str]] = {}
    for label, name, where, per in STAGES:
        h = Histogram.delta(before, after, name, where)
        out[label] = {"metric": name, "per": per, "count": h.count, "sum_s": h.sum, "mean_s": h.mean,
                      "p50_s": h.quantile(0.5), "p95_s": h.quantile(0.95)}
    return out

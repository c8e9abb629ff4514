"""The report: ratios against the baselines of the same run, then the figures, then stage timings."""

from __future__ import annotations

import math
import subprocess
from datetime import UTC, datetime
from typing import Any

from bench import results_file
from bench.consume import PIPELINE, ROOT

TITLE = "## Consumer throughput, latency, memory, stage timings (python -m bench.consume)"
REPORTED_SETTINGS = ("consumer_workers", "per_org_concurrency", "batch_delay_ms", "gate_cache_seconds")


def code_version() -> str:
    """The commit measured, and the service files that differ from it (bench/ aside)."""
    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,  # noqa: S603, S607
                                  timeout=30).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "--short", "HEAD") or "?"
    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
             if not line[3:].startswith("bench/")]
    return f"commit {commit}" + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else " (clean tree)")


def _ms(seconds: float) -> str:
    return "      -" if math.isnan(seconds) else f"{seconds * 1000:7.2f}"


def _ratio(value: float, base: float) -> str:
    return "     -" if math.isnan(value) or not base else f"x{value / base:5.2f}"


def stage_table(stages: dict[str, dict[str, Any]], runs: int, bare_p50: float) -> list[str]:
    lines = [f"{'stage':28} {'count':>6} {'mean ms':>7} {'p50 ms':>7} {'p95 ms':>7} {'ms/run':>7} "
             f"{'mean / bare p50':>15}"]
    for label, s in stages.items():
        per_run = s["sum_s"] / runs if runs else math.nan
        lines.append(f"{label:28} {s['count']:6.0f} {_ms(s['mean_s'])} {_ms(s['p50_s'])} {_ms(s['p95_s'])} "
                     f"{_ms(per_run)} {_ratio(s['mean_s'], bare_p50):>15}")
    return lines


def render(r: dict[str, Any], command: str) -> str:
    a, bare, blat, c = r["args"], r["bare"], r["bare_latency"], r["consumer"]
    tp, mem, lat = c["throughput"], c["memory"], c["latency"]
    ratio = tp["rate"] / bare["rate"]
    target = "meets it" if ratio >= 0.5 else f"x{0.5 / ratio:.1f} short"
    runs = tp["runs"]
    bare_cpu = bare["cpu"]["bench process"] / bare["messages"]
    cons_cpu = tp["cpu"]["consumer process"] / runs
    q = mem["quarters_kb"]
    settings = ", ".join(f"{k}={v}" for k, v in c["settings"].items())
    out = [
        f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d %H:%M UTC}). Consumer: `python -m convergence "
        f"consume` in its own process, unmodified ({settings}); no-op pipeline `{PIPELINE}`; {a['orgs']} orgs; "
        f"service code {r['code']}. Machine: 2 cores shared with other sessions, load average (1/5/15 min) "
        f"{r['load_start']} at the start, {r.get('load_end', '?')} at the end: compare ratios, not absolute rates.",
        "",
        "```",
        f"throughput  consumer / bare subscriber      : {ratio:.4f}   (target >= 0.5: {target})",
        f"latency     p50 / p95, consumer / bare      : x{lat['p50'] / blat['p50']:.1f} / "
        f"x{lat['p95'] / blat['p95']:.1f}",
        f"CPU         consumer ms/run / bare ms/msg   : x{cons_cpu / bare_cpu:.1f}   "
        f"({cons_cpu * 1000:.2f} / {bare_cpu * 1000:.2f} ms)",
        f"memory      consumer RSS after / before     : {mem['after_kb'] / mem['before_kb']:.3f}   (over {runs} runs)",
        "",
        f"(a) bare streaming pull, ack only : {bare['rate']:8.0f} msg/s  ({bare['messages']} msgs in "
        f"{bare['span_s']:.2f} s first->last callback)",
        f"(b) consumer, no-op pipeline      : {tp['rate']:8.2f} runs/s ({runs} runs in {tp['span_s']:.1f} s "
        f"first->last completion, {tp['window']} outstanding; {tp['statuses']}, run log "
        f"{tp['runlog_succeeded']}/{runs} SUCCESS)",
        f"(c) publish -> pipeline_completed : p50 {lat['p50'] * 1000:.1f} ms, p95 {lat['p95'] * 1000:.1f} ms "
        f"({lat['n']} runs at {c['latency_rate']:g}/s); bare publish -> callback p50 {blat['p50'] * 1000:.1f} ms, "
        f"p95 {blat['p95'] * 1000:.1f} ms",
        f"(d) consumer RSS MiB: after warm-up {mem['before_kb'] / 1024:.1f}; at 25/50/75/100% of (b) "
        + " / ".join(f"{q.get(i, 0) / 1024:.1f}" for i in (1, 2, 3, 4))
        + f"; peak {mem['peak_kb'] / 1024:.1f}; after {mem['after_kb'] / 1024:.1f}; after (c) "
        f"{c['latency_rss_kb'] / 1024:.1f}",
        "CPU ms/run in (b): " + ", ".join(f"{name} {sec / runs * 1000:.2f}" for name, sec in tp["cpu"].items()
                                          if name != "wall_s"),
        "",
        f"Stages in (b) ({runs} runs, backlog), from the consumer's histograms "
        f"(quantiles interpolated within buckets; last column: mean / bare delivery p50 of (c)):",
        *stage_table(tp["stages"], runs, blat["p50"]),
        "",
        f"Stages in (c) ({lat['n']} runs at {c['latency_rate']:g}/s, otherwise idle):",
        *stage_table(lat["stages"], lat["n"], blat["p50"]),
        "```",
        "",
        f"Run-log commits are shared by runs (count < runs; ms/run = the commit time divided over the runs). "
        f"`run` is `convergence_run_duration_seconds` (whole milliseconds, buckets from 100 ms: its quantiles "
        f"only say < 100 ms for a no-op run; its mean is exact). Events seen after (b): "
        f"{c.get('event_types', {})}; consumer exit code {c['exit_code']}; {c.get('log_lines', '?')} log lines.",
    ]
    return "\n".join(out)


def write(report: str, label: str) -> None:
    results_file.write_section(TITLE, f"<!-- bench/consume:{label}:start -->",
                               f"<!-- bench/consume:{label}:end -->", report)

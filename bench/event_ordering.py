"""Events topic: the publisher's cost per run for each choice of ordering key, on the Pub/Sub emulator.

Each run publishes 4 events (pipeline_started, step_started, step_completed, pipeline_completed) of a
realistic size. Compared in the same run, alternating: ordering key = run_id (one ordered sequencer and
its own publish batches per run), = org_slug (runs of an org share batches; what publisher/events.py
does), and no ordering (the baseline: the cheapest possible). Reported as ratios to the baseline.

    .venv/bin/python bench/event_ordering.py [--runs 2000] [--orgs 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from google.cloud import pubsub_v1  # noqa: E402
from google.cloud.pubsub_v1 import types  # noqa: E402

from devstack.stack import LocalStack  # noqa: E402
from schemas import EventType, PipelineEvent, RunRequest  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
TITLE = "## Events: ordering key per run vs per org (bench/event_ordering.py)"
SECTION_START = "<!-- bench/event_ordering.py:start -->"
SECTION_END = "<!-- bench/event_ordering.py:end -->"
MODES = ("none", "run_id", "org_slug")
EVENTS = (EventType.PIPELINE_STARTED, EventType.STEP_STARTED, EventType.STEP_COMPLETED,
          EventType.PIPELINE_COMPLETED)


def publish_round(client: pubsub_v1.PublisherClient, topic: str, mode: str, runs: int,
                  orgs: int) -> tuple[float, float]:
    """(runs per second, publisher CPU ms per run) until every publish is confirmed."""
    requests = [RunRequest.create(f"org_{i % orgs:04d}", "utility/smoke/noop", {}) for i in range(runs)]
    payloads = [[(PipelineEvent.for_request(kind, r, attempt=1, status="RUNNING", pipeline_id=f"{r.org_slug}_p",
                                            step_id=None if "pipeline" in kind.value else "noop").to_json(), r)
                 for kind in EVENTS] for r in requests]
    wall, cpu = time.perf_counter(), time.process_time()
    sent = []
    for events in payloads:
        for data, request in events:
            key = {"none": "", "run_id": request.run_id, "org_slug": request.org_slug}[mode]
            sent.append(client.publish(topic, data, ordering_key=key, run_id=request.run_id))
    futures.wait(sent)
    assert all(f.exception() is None for f in sent)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return runs / wall, 1000 * cpu / runs


def run(args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    with LocalStack() as stack:
        stack.apply_env()
        admin = pubsub_v1.PublisherClient()
        topic = admin.topic_path(stack.project, f"bench-events-{uuid.uuid4().hex[:6]}")
        admin.create_topic(name=topic)
        clients = {mode: pubsub_v1.PublisherClient(publisher_options=types.PublisherOptions(
            enable_message_ordering=mode != "none")) for mode in MODES}
        publish_round(clients["none"], topic, "none", min(200, args.runs), args.orgs)  # warm-up
        for _ in range(args.rounds):
            for mode in MODES:
                results[mode].append(publish_round(clients[mode], topic, mode, args.runs, args.orgs))
    return results


def report(results: dict[str, list[tuple[float, float]]], command: str) -> str:
    base_rate = statistics.median(r for r, _ in results["none"])
    base_cpu = statistics.median(c for _, c in results["none"])
    lines = [f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC); medians of the rounds.", "", "```",
             f"{'ordering key':<12} {'runs/s':>8} {'x none':>7} {'CPU ms/run':>11} {'x none':>7}"]
    for mode in MODES:
        rate = statistics.median(r for r, _ in results[mode])
        cpu = statistics.median(c for _, c in results[mode])
        lines.append(f"{mode:<12} {rate:>8.0f} {rate / base_rate:>7.2f} {cpu:>11.3f} {cpu / base_cpu:>7.2f}")
    lines += ["```", "", "Events are published with ordering key org_slug (publisher/events.py)."]
    return "\n".join(lines)


def write_section(text: str) -> None:
    body = f"{SECTION_START}\n{text}\n{SECTION_END}"
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if SECTION_START in current and SECTION_END in current:
        head, rest = current.split(SECTION_START, 1)
        _, tail = rest.split(SECTION_END, 1)
        current = head + body + tail
    else:
        current = current.rstrip("\n") + f"\n\n{TITLE}\n\n" + body + "\n"
    RESULTS.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    text = report(run(args), " ".join([".venv/bin/python bench/event_ordering.py", *sys.argv[1:]]))
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()

"""Events topic: the publisher's cost per run for each choice of ordering key, on the Pub/Sub emulator.

Each run publishes 4 events (pipeline_started, step_started, step_completed, pipeline_completed) of a
realistic size. Compared in the same run, alternating: ordering key = run_id (one ordered sequencer and
its own publish batches per run), = org_slug (runs of an org share batches; what publisher/events.py
does), and no ordering (the baseline: the cheapest possible). Reported as ratios to the baseline.

    .venv/bin/python bench/event_ordering.py [--runs 2000] [--orgs 50] [--rounds 3] [--rate 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
import zlib
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import results_file  # noqa: E402 - bench/results_file.py, next to this script
from google.cloud import pubsub_v1  # noqa: E402
from google.cloud.pubsub_v1 import types  # noqa: E402

from convergence.devstack.stack import LocalStack  # noqa: E402
from convergence.schemas import EventType, PipelineEvent, RunRequest  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
TITLE = "## Events: ordering key per run vs per org (bench/event_ordering.py)"
SECTION_START = "<!-- bench/event_ordering.py:start -->"
SECTION_END = "<!-- bench/event_ordering.py:end -->"
MODES = ("none", "run_id", "org_slug", "org_shard16")
EVENTS = (EventType.PIPELINE_STARTED, EventType.STEP_STARTED, EventType.STEP_COMPLETED,
          EventType.PIPELINE_COMPLETED)


def emulator_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def find_emulator(port: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith("java") and f"--port={port}" in cmdline:
                return int(entry.name)
    return None


def publish_round(client: pubsub_v1.PublisherClient, topic: str, mode: str, runs: int, orgs: int,
                  rate: float, emulator: int | None) -> tuple[float, float, float]:
    """(runs per second, publisher CPU ms per run, emulator CPU ms per run) until every publish is confirmed.
    Runs start at `rate` per second (0: all at once), as a consumer's runs finish over time."""
    requests = [RunRequest.create(f"org_{i % orgs:04d}", "utility/smoke/noop", {}) for i in range(runs)]
    payloads = [[(PipelineEvent.for_request(kind, r, attempt=1, status="RUNNING", pipeline_id=f"{r.org_slug}_p",
                                            step_id=None if "pipeline" in kind.value else "noop").to_json(), r)
                 for kind in EVENTS] for r in requests]
    wall, cpu, emu = time.perf_counter(), time.process_time(), emulator_cpu(emulator)
    sent = []
    for index, events in enumerate(payloads):
        if rate:
            time.sleep(max(0.0, wall + index / rate - time.perf_counter()))
        for data, request in events:
            key = {"none": "", "run_id": request.run_id, "org_slug": request.org_slug,
                   "org_shard16": f"s{zlib.crc32(request.org_slug.encode()) % 16}"}[mode]
            sent.append(client.publish(topic, data, ordering_key=key, run_id=request.run_id))
    futures.wait(sent)
    assert all(f.exception() is None for f in sent)
    wall, cpu, emu = time.perf_counter() - wall, time.process_time() - cpu, emulator_cpu(emulator) - emu
    return runs / wall, 1000 * cpu / runs, 1000 * emu / runs


def run(args: argparse.Namespace) -> dict[str, list[tuple[float, float, float]]]:
    results: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in MODES}
    with LocalStack() as stack:
        stack.apply_env()
        admin = pubsub_v1.PublisherClient()
        topic = admin.topic_path(stack.project, f"bench-events-{uuid.uuid4().hex[:6]}")
        admin.create_topic(name=topic)
        clients = {mode: pubsub_v1.PublisherClient(publisher_options=types.PublisherOptions(
            enable_message_ordering=mode != "none")) for mode in MODES}
        emulator = find_emulator(stack.pubsub.port)
        publish_round(clients["none"], topic, "none", min(200, args.runs), args.orgs, 0, emulator)  # warm-up
        for _ in range(args.rounds):
            for mode in MODES:
                results[mode].append(publish_round(clients[mode], topic, mode, args.runs, args.orgs, args.rate,
                                                   emulator))
    return results


def report(results: dict[str, list[tuple[float, float, float]]], command: str) -> str:
    def median(mode: str, index: int) -> float:
        return statistics.median(r[index] for r in results[mode])

    lines = [f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC); medians of the rounds; 4 events "
             "per run; CPU of this publisher and of the Pub/Sub emulator per run.", "", "```",
             f"{'ordering key':<12} {'runs/s':>8} {'x none':>7} {'client ms/run':>14} {'x none':>7} "
             f"{'emulator ms/run':>16} {'x none':>7}"]
    for mode in MODES:
        lines.append(f"{mode:<12} {median(mode, 0):>8.0f} {median(mode, 0) / median('none', 0):>7.2f} "
                     f"{median(mode, 1):>14.3f} {median(mode, 1) / median('none', 1):>7.2f} "
                     f"{median(mode, 2):>16.3f} {median(mode, 2) / max(median('none', 2), 1e-9):>7.2f}")
    lines += ["```", "", "Events are published with one of 16 ordering keys chosen by org (publisher/events.py)."]
    return "\n".join(lines)


def write_section(text: str) -> None:
    results_file.write_section(TITLE, SECTION_START, SECTION_END, text, RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0, help="runs started per second (0: all at once)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    text = report(run(args), " ".join([".venv/bin/python bench/event_ordering.py", *sys.argv[1:]]))
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()

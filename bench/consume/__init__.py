"""Throughput, latency, memory and stage timings of the whole consumer.

One local stack (Pub/Sub emulator + bqemulator), one run, the same number of messages for each part:

  (a) baseline: a bare streaming-pull subscriber whose callback only acks (library defaults), on its own
      topic/subscription, fed the same run-request payloads; msgs/s from its first to its last callback.
  (b) the consumer, as production runs it (`python -m convergence consume`, its own process, unmodified),
      on run requests for the one-step no-op pipeline `utility/smoke/noop` spread round-robin over --orgs
      orgs; run requests/s from the first to the last completion, and its ratio to (a). Completions are
      counted from the consumer's own /metrics (METRICS_PORT), polled every 0.1 s; no subscription is
      attached to the events topic during (b), like (a) which has none.
  (c) latency: with the consumer otherwise idle, --latency-runs requests at a steady --latency-rate;
      publish -> `pipeline_completed` published (Pub/Sub publish time, followed through an events
      subscription created after (b)), p50/p95; baseline: publish -> bare subscriber callback, same rate.
  (d) memory: consumer RSS after a warm-up, during and after (b).

Stage timings (slot wait, admission wait, run, run-log commit, final event publish) are the deltas of the
consumer's own histograms (docs/observability.md) between a scrape before and one after (b) and (c):
mean = sum/count, quantiles interpolated within buckets (as PromQL's histogram_quantile). Nothing inside
the consumer is patched.

    .venv/bin/python -m bench.consume [--messages 2000] [--orgs 8] [--workers 8] [--per-org 2]
        [--latency-runs 60] [--latency-rate 5] [--label main] [--no-write]

Figures go to stdout and to this benchmark's block (per --label) of bench/RESULTS.md.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PIPELINE = "utility/smoke/noop"
PLAN = "BENCH"

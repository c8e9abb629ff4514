"""The image's HEALTHCHECK: exit 0 when the container's role is healthy, else print one line saying why and
exit 1. Standard library only: `python -I -m convergence.healthcheck` imports nothing of the service but the
package's own light `__init__`.

serve: /health on HTTP_PORT answers 200.
consume: /health on METRICS_PORT answers 200 and every pool in it is pulling: its stream open, Pub/Sub
answering its last probe. /health already answers 503 when a pool is not `ok`; the pools are checked here
too so the health log names the pool and what is wrong with it."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 4.0  # under the HEALTHCHECK's --timeout


def role() -> str:
    """The role the container's main process runs: its command line names it (tini or --init may run first)."""
    try:
        with open("/proc/1/cmdline", "rb") as cmdline:
            words = cmdline.read().split(b"\0")
    except OSError:
        words = []
    return "consume" if b"consume" in words else "serve"


def get_health(port: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=TIMEOUT_SECONDS) as answer:  # noqa: S310
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as error:  # 503 carries the pools' state too
        status, raw = error.code, error.read()
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        body = None
    return status, body


def pool_problem(pool: dict) -> str | None:
    name = pool.get("subscription", "?")
    wrong = []
    if pool.get("stream") != "open":
        wrong.append(f"stream {pool.get('stream')}")
    if pool.get("reachable") is False:
        wrong.append("Pub/Sub unreachable")
    if pool.get("ok") is not True:
        wrong.append("not ok")
    if not wrong:
        return None
    age = pool.get("last_pull_age_seconds")
    since = "" if age is None else f", last pull {age} s ago"
    return f"pool {name}: {', '.join(wrong)}{since}"


def check() -> str | None:
    """Why the container is unhealthy, or None."""
    which = role()
    setting = "METRICS_PORT" if which == "consume" else "HTTP_PORT"
    port = os.environ.get(setting, "").strip()
    if not port:
        return f"{which}: {setting} is not set, so nothing serves /health"
    try:
        status, body = get_health(port)
    except OSError as error:  # refused, timed out: the server is not up
        reason = getattr(error, "reason", error)
        return f"{which}: /health on port {port} did not answer ({type(reason).__name__}: {reason})"
    if which == "consume":
        pools = body.get("pools") if isinstance(body, dict) else None
        if not pools:
            return f"consume: /health on port {port} answered {status} without any pool"
        problems = [problem for problem in map(pool_problem, pools) if problem]
        if problems:
            return "consume: " + "; ".join(problems)
    if status != 200:
        return f"{which}: /health on port {port} answered {status}"
    return None


def main() -> int:
    problem = check()
    if problem is None:
        return 0
    print(f"unhealthy: {problem}")
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""`make run` (`convergence dev demo`) end to end, as a newcomer runs it: it starts its own local stack,
and its story holds: every run finishes, the suspended org is refused, one org runs a pipeline on its own
schedule and an org with an INVALID credential is left out of that provider's pipelines."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.paths import REPO_ROOT


@pytest.mark.slow
@pytest.mark.emulator
@pytest.mark.timeout(600)
def test_make_run_tells_the_whole_story():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUBSUB_EMULATOR", "BIGQUERY_EMULATOR"))}
    result = subprocess.run([sys.executable, "-m", "convergence", "dev", "demo"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=580)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "== Done: 9 of 9 runs finished" in out
    assert "REJECTED paused_demo" in out and "SUBSCRIPTION_SUSPENDED" in out
    assert "acme_demo runs openai/cost/usage_cost on its own schedule 40 5 * * * Europe/Paris" in out
    assert "OPENAI pipelines are scheduled for: acme_demo; skipped: stale_demo (credential not valid)" in out
    assert "ANTHROPIC pipelines are scheduled for: acme_demo, stale_demo" in out
    assert "== Console: http://127.0.0.1:" in out and "/console (sign in with the root key" in out
    assert "Traceback" not in out + result.stderr

"""Test processor: records that its run entered, then holds until the test releases every held run."""

import asyncio
import threading

ENTERED: list[tuple[str, str]] = []  # (org_slug, run_id), in the order runs entered
RELEASE = threading.Event()
_LOCK = threading.Lock()


def entered(org: str) -> int:
    with _LOCK:
        return sum(1 for o, _ in ENTERED if o == org)


class Hold:
    async def execute(self, step, context):
        with _LOCK:
            ENTERED.append((context.org_slug, context.run_id))
        while not RELEASE.is_set():  # the test's thread sets it; this loop belongs to the consumer's thread
            await asyncio.sleep(0.02)
        return {"status": "SUCCESS", "rows_processed": 0}


def get_engine():
    return Hold()

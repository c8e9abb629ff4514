"""Test processor: sleeps `seconds`, records start/end times in a shared journal, returns rows."""

import asyncio
import time

JOURNAL: list[tuple[str, str, float]] = []


class Sleep:
    async def execute(self, step, context):
        JOURNAL.append((step.step_id, "start", time.perf_counter()))
        await asyncio.sleep(float(context.resolve(step.config.get("seconds", 0))))
        JOURNAL.append((step.step_id, "end", time.perf_counter()))
        return {"status": "SUCCESS", "rows_processed": int(step.config.get("rows", 1)),
                "echo": context.resolve(step.config.get("echo", ""))}


def get_engine():
    return Sleep()

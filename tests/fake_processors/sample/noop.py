"""Test processor that does nothing (benchmarks, overhead tests)."""


class Noop:
    async def execute(self, step, context):
        return {"status": "SUCCESS", "rows_processed": 0}


def get_engine():
    return Noop()

"""utility.noop: does nothing and succeeds. For smoke tests of a deployment and for benchmarks."""


class Noop:
    async def execute(self, step, context):
        return {"status": "SUCCESS", "rows_processed": 0}


def get_engine() -> Noop:
    return Noop()

"""A broken processor: execute is not async."""


class Sync:
    def execute(self, step, context):
        return {}


def get_engine():
    return Sync()

"""Blocking calls the event loop must be able to stop waiting for."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any


def in_daemon_thread(fn: Callable[..., Any], *args: Any, name: str = "blocking-call",
                     **kwargs: Any) -> asyncio.Future[Any]:
    """fn(*args, **kwargs) on a daemon thread. Unlike asyncio.to_thread, whose executor threads are joined
    at exit, a call still under way when the process exits (an RPC to an unreachable service) does not hold
    the process past the platform's SIGKILL."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def deliver(set_outcome: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            set_outcome(value)

    def call() -> None:
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting coroutine
            outcome = (future.set_exception, error)
        else:
            outcome = (future.set_result, result)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(deliver, *outcome)

    threading.Thread(target=call, name=name, daemon=True).start()
    return future

"""Run the consumer service on its own event loop in a background thread (demo and tests).

Signal handlers belong to the main thread, so the service runs with handle_signals=False and is
stopped with stop()."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices


class BackgroundConsumer:
    def __init__(self, settings: Any, services: PlatformServices, notify: Any = None):
        from convergence.consumer.service import ConsumerService

        self.service = ConsumerService(settings, services, notify=notify)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="consumer", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.service.run(handle_signals=False))
        except BaseException as error:  # noqa: BLE001 - reported by stop()
            self.error = error

    def start(self) -> BackgroundConsumer:
        self.thread.start()
        return self

    def stop(self, timeout: float = 60) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.service.stop)
        self.thread.join(timeout)

"""The `serve` process wired up: RunHandler behind the push endpoint, long runs handed to the pull side."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from convergence.consumer.handler import RunHandler
from convergence.consumer.http_app import Lifecycle, create_app
from convergence.pipeline import PipelineLoader
from convergence.settings import Settings

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices


def build_push_app(settings: Settings, services: PlatformServices, notify: Any = None) -> web.Application:
    async def hand_off(data: bytes, attributes: Mapping[str, str]) -> None:
        # Runs too long for a push request go to the topic the pull workers read, same run_id.
        await asyncio.wrap_future(services.handoff.publish_raw(data, dict(attributes)))

    handler = RunHandler(services=services, loader=PipelineLoader(settings.configs_dir),
                         notify=notify if notify is not None else services.notifier, hand_off=hand_off)

    async def close() -> None:
        await handler.aclose()
        await asyncio.to_thread(services.close)
        await services.aclose()

    return create_app(settings, handler, lifecycle=[Lifecycle(cleanup=close)])

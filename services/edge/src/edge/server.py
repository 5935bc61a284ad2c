"""Runs uvicorn (REST) and the gRPC health server in one event loop."""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from edge.app import create_app
from edge.mesh import Mesh
from edge.settings import EdgeSettings
from svckit.server import GrpcService


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # GrpcService owns SIGTERM and stops us
        yield

    async def main_loop(self) -> None:
        """uvicorn's housekeeping (the Date header, should_exit) once a second rather than ten
        times: an idle edge then sleeps. The Date header has one-second resolution anyway;
        a stop is seen within the second."""
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000
            await asyncio.sleep(1.0)


async def serve(settings: EdgeSettings) -> None:
    service = GrpcService(settings)
    mesh = Mesh(settings)
    app = create_app(settings, mesh)
    # One SERVER span per request; no span per ASGI send/receive message.
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics", exclude_spans=["receive", "send"])
    http = _Uvicorn(
        uvicorn.Config(
            app,
            host=settings.edge_http_host,
            port=settings.edge_http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        )
    )
    task: asyncio.Task | None = None

    async def start() -> None:
        nonlocal task
        task = asyncio.create_task(http.serve())
        while not http.started:
            if task.done():
                task.result()  # raises the bind error
            await asyncio.sleep(0.05)

    async def stop() -> None:
        http.should_exit = True
        if task:
            await task
        await mesh.close()

    async def ready() -> bool:
        return all((await mesh.readiness()).values())

    service.on_start(start)
    service.on_stop(stop)
    service.readiness_check(ready)
    await service.run()

"""A real HTTP server that receives webhooks in tests, and the signature check."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.ports import free_port


@dataclass
class Receiver:
    """A real HTTP server that answers 500 to the first `failures` POSTs, then 200."""

    failures: int = 0
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def hook(self, request: Request) -> Response:
        self.calls.append((dict(request.headers), await request.body()))
        return Response(status_code=500 if len(self.calls) <= self.failures else 200)

    async def wait_calls(self, count: int, timeout: float = 60.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.calls) < count and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        assert len(self.calls) >= count, f"{len(self.calls)} webhook calls, expected {count}"


@contextlib.asynccontextmanager
async def receiver(failures: int = 0) -> AsyncIterator[Receiver]:
    rec = Receiver(failures=failures)
    port = free_port()
    rec.url = f"http://127.0.0.1:{port}/hook"
    app = Starlette(routes=[Route("/hook", rec.hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the receiver did not start"
        await asyncio.sleep(0.02)
    try:
        yield rec
    finally:
        server.should_exit = True
        await task


def verify(secret: str, headers: dict[str, str], body: bytes) -> None:
    timestamp = headers["x-pixelmesh-timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-pixelmesh-signature"], f"v1={expected}")

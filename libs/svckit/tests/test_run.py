"""`svckit.server.run`: what every service's `python -m <service>` runs its `serve` on."""

import asyncio

import uvloop

from svckit.server import run


def test_run_drives_the_coroutine_on_uvloop() -> None:
    seen: list[type] = []

    async def serve() -> None:
        seen.append(type(asyncio.get_running_loop()))

    run(serve())

    assert seen == [uvloop.Loop]

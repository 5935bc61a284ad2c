"""Polling a generation through the public API, as a client would."""

from __future__ import annotations

import asyncio

import httpx


async def wait_finished(http: httpx.AsyncClient, generation_id: str, timeout: float = 120.0) -> dict:
    """GET /api/v2/generate/{id} until it is no longer pending (or the timeout passes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = await http.get(f"/api/v2/generate/{generation_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] != "pending" or loop.time() > deadline:
            return body
        await asyncio.sleep(0.1)

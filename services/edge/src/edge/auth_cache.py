"""The edge's short memory of authenticated API keys.

Every REST call names its key, and asking pricing each time (a gRPC call and a database
read) cost more than many routes' own work. An answer is remembered for at most
`ttl_seconds` (EDGE_AUTH_CACHE_SECONDS, 1 s by default; 0 turns the cache off), so a
revoked key stops working on reads within that time on every edge replica; anything that
spends money is refused at once regardless, because pricing checks the key again inside
the reservation. Refusals are never remembered (a new key works at once), and concurrent
calls for one key share a single lookup.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
MAX_KEYS = 10_000


class AuthCache(Generic[T]):
    def __init__(
        self, lookup: Callable[[str], Awaitable[T]], ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl_seconds
        self._clock = clock
        self._known: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[T]] = {}

    async def get(self, api_key: str) -> T:
        if self._ttl <= 0:
            return await self._lookup(api_key)
        found = self._known.get(api_key)
        if found is not None and found[0] > self._clock():
            return found[1]
        pending = self._pending.get(api_key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending[api_key] = future
        try:
            value = await self._lookup(api_key)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        else:
            future.set_result(value)
            self._remember(api_key, value)
            return value
        finally:
            del self._pending[api_key]

    def _remember(self, api_key: str, value: T) -> None:
        self._known[api_key] = (self._clock() + self._ttl, value)
        self._known.move_to_end(api_key)
        while len(self._known) > MAX_KEYS:
            self._known.popitem(last=False)

import asyncio

import pytest

from edge.auth_cache import AuthCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Pricing:
    """Stands in for pricing's Authenticate: counts lookups, refuses revoked keys."""

    def __init__(self) -> None:
        self.calls = 0
        self.revoked: set[str] = set()

    async def authenticate(self, key: str) -> str:
        self.calls += 1
        await asyncio.sleep(0.01)
        if key in self.revoked:
            raise PermissionError(key)
        return f"caller of {key}"


async def test_an_answer_is_remembered_for_the_ttl_and_a_revocation_shows_after_it() -> None:
    pricing, clock = Pricing(), Clock()
    cache = AuthCache(pricing.authenticate, ttl_seconds=1.0, clock=clock)
    assert await cache.get("k") == "caller of k"
    assert await cache.get("k") == "caller of k" and pricing.calls == 1
    pricing.revoked.add("k")
    clock.now += 0.9
    assert await cache.get("k") == "caller of k"  # still within the second
    clock.now += 0.2
    with pytest.raises(PermissionError):
        await cache.get("k")
    with pytest.raises(PermissionError):  # refusals are never remembered
        await cache.get("k")
    assert pricing.calls == 3


async def test_concurrent_calls_share_one_lookup_and_its_failure() -> None:
    pricing = Pricing()
    cache = AuthCache(pricing.authenticate, ttl_seconds=1.0)
    assert await asyncio.gather(*(cache.get("k") for _ in range(20))) == ["caller of k"] * 20
    assert pricing.calls == 1
    pricing.revoked.add("bad")
    results = await asyncio.gather(*(cache.get("bad") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, PermissionError) for r in results) and pricing.calls == 2


async def test_ttl_zero_asks_every_time() -> None:
    pricing = Pricing()
    cache = AuthCache(pricing.authenticate, ttl_seconds=0)
    await cache.get("k")
    await cache.get("k")
    assert pricing.calls == 2

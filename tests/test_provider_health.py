"""A provider whose key the upstream refuses: routing sees its pool unhealthy with the
reason (`make status` prints it), and its models answer 503 naming the provider instead of
queueing jobs that would all fail the same way; a worker with a good key heals the pool.

The workers report every second here (WORKER_HEALTH_INTERVAL_SECONDS), so their reports
stop being current three seconds after they stop: the session's other openai tests find
the pool as they would without this one (UNKNOWN: jobs queue until a worker takes them).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from pixelmesh.routing.v1 import routing_service_pb2 as routing_pb
from tests.emulators.harness import EmulatorServer
from tests.support.ports import free_port
from tests.support.provider_mesh import require_route, start_worker

KEY = "sk-test-health-0123456789"
FAST_HEALTH = {"WORKER_HEALTH_INTERVAL_SECONDS": "1"}
DALL_E_2 = {"model": "dall-e-2", "prompt": "a key that works", "size": "256x256"}


@pytest.fixture
def upstream(mesh):  # noqa: ANN001, ANN201
    require_route(mesh, "openai")
    srv = EmulatorServer("openai", free_port(), api_key=KEY).start()
    yield srv
    srv.stop()


def pool(mesh, name: str) -> routing_pb.ProviderPool:  # noqa: ANN001
    return next(p for p in mesh.providers() if p.name == name)


async def until(check, timeout: float = 15.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)
    return result


async def test_a_refused_key_makes_its_models_503_naming_the_provider(mesh, upstream, edge_url, api_key) -> None:  # noqa: ANN001
    url = f"{upstream.url}/v1"
    bad = start_worker(mesh, "openai", instance="worker-openai-badkey", OPENAI_API_KEY="sk-refused-key-000000",
                       OPENAI_BASE_URL=url, **FAST_HEALTH)
    good = ""
    try:
        async with httpx.AsyncClient(base_url=edge_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as http:
            await until(lambda: pool(mesh, "openai").health == routing_pb.POOL_HEALTH_HEALTHY)
            first = await http.post("/v1/images/generations", json=DALL_E_2)
            assert first.status_code == 502 and first.json()["error"]["code"] == "provider_auth_error", first.text
            sick = await until(lambda: (p := pool(mesh, "openai")).health == routing_pb.POOL_HEALTH_UNHEALTHY and p)
            assert sick.code == "provider_auth_error" and "openai" in sick.reason and sick.workers >= 1
            assert "dall-e-2" in sick.models

            refused = await http.post("/v1/images/generations", json=DALL_E_2)
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "provider_unavailable" and "openai" in error["message"], error
            assert "refused the gateway's credentials" in error["message"]
            v2 = await http.post("/api/v2/generate", json=DALL_E_2)
            assert v2.status_code == 503 and "openai" in v2.json()["error"]["message"], v2.text
            # other pools are not affected
            local = await http.post("/v1/images/generations", json={"model": "pixelmesh-sketch", "prompt": "still fine", "size": "256x256"})
            assert local.status_code == 200, local.text

            # the operator starts a worker with the right key: the pool serves again
            good = start_worker(mesh, "openai", instance="worker-openai-goodkey", OPENAI_API_KEY=KEY,
                                OPENAI_BASE_URL=url, **FAST_HEALTH)
            await until(lambda: pool(mesh, "openai").health == routing_pb.POOL_HEALTH_HEALTHY)
            mesh.stop(bad)
            healed = await http.post("/v1/images/generations", json=DALL_E_2)
            assert healed.status_code == 200, healed.text
    finally:
        mesh.stop(bad)
        if good:
            mesh.stop(good)
    # three intervals after the last report, nothing of this test is left in routing's view
    await until(lambda: pool(mesh, "openai").health == routing_pb.POOL_HEALTH_UNKNOWN)


def test_the_local_pool_is_listed_with_its_models(mesh) -> None:  # noqa: ANN001
    local = pool(mesh, "local")
    assert local.health == routing_pb.POOL_HEALTH_HEALTHY and local.workers >= 1
    assert "pixelmesh-sketch" in local.models and local.circuit == "closed"

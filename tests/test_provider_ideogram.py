"""The Ideogram adapter against the Ideogram emulator, over real HTTP."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from tests.emulators import ideogram as emu
from tests.emulators.harness import EmulatorServer
from tests.support.ports import free_port
from tests.support.provider_mesh import require_route, start_worker
from tests.support.provider_jobs import FAST_RETRIES, api_calls, failure, generation, opened, received, reset, run
from worker.providers.ideogram import IdeogramProvider, IdeogramSettings

KEY = "ideogram-test-key-987654"


@pytest.fixture(scope="module")
def server():
    srv = EmulatorServer("ideogram", free_port(), api_key=KEY).start()
    yield srv
    srv.stop()


def settings(server: EmulatorServer, **env: str) -> IdeogramSettings:
    return IdeogramSettings(**{"IDEOGRAM_API_KEY": KEY, "IDEOGRAM_BASE_URL": server.url, **FAST_RETRIES, **env})


def limit_upstream(server: EmulatorServer, images: int) -> None:
    httpx.post(f"{server.url}/_emulator/ideogram/limits", json={"max_inflight_images": images}).raise_for_status()


def inflight(server: EmulatorServer) -> dict:
    return httpx.get(f"{server.url}/_emulator/ideogram/inflight").json()


@pytest.fixture
async def provider(server):
    reset(server)
    limit_upstream(server, 10)
    p = IdeogramProvider.build(settings(server))
    yield p
    await p.close()


async def test_legacy_v2_json_request_and_downloaded_results(server, provider) -> None:
    g = generation("ideogram-v2", "a beach sign that says HELLO", size="1344x768", n=2, seed=3_000_000_000,
                   negative_prompt="people", style="realistic", output_format=gen.OUTPUT_FORMAT_WEBP)
    result, rec = await run(provider, g)
    assert received(server)[0] == {"path": "/generate", "fields": {
        "prompt": "a beach sign that says HELLO", "model": "V_2", "aspect_ratio": "ASPECT_16_9",
        "seed": 3_000_000_000 % 2_147_483_648, "num_images": 2, "negative_prompt": "people", "style_type": "REALISTIC"}}
    assert len(result.images) == 2 and all(opened(i).format == "WEBP" for i in result.images)
    assert (result.images[0].width, result.images[0].height) == (1376, 768)
    assert result.images[0].revised_prompt.startswith("a beach sign that says HELLO, intricate")
    assert rec.percents[-1] == 100.0


async def test_v3_multipart_with_rendering_speed(server, provider) -> None:
    result, _ = await run(provider, generation("ideogram-v3-turbo", "a poster", size="768x1344", seed=7))
    sent = received(server)[0]
    assert sent["path"] == "/v1/ideogram-v3/generate"
    assert sent["fields"] == {"prompt": "a poster", "rendering_speed": "TURBO", "aspect_ratio": "9x16", "seed": "7",
                              "num_images": "1"}
    assert opened(result.images[0]).size == (768, 1376)


async def test_magic_prompt_setting_and_no_rewrite(server) -> None:
    reset(server)
    p = IdeogramProvider.build(settings(server, IDEOGRAM_MAGIC_PROMPT="OFF"))
    try:
        result, _ = await run(p, generation("ideogram-v3", "plain"))
        await run(p, generation("ideogram-v2a", "plain"))
    finally:
        await p.close()
    assert received(server)[0]["fields"]["magic_prompt"] == "OFF"
    assert received(server)[1]["fields"]["magic_prompt_option"] == "OFF"
    assert result.images[0].revised_prompt == ""


async def test_safety_check_is_content_policy_without_retry(server, provider) -> None:
    err = await failure(provider, generation("ideogram-v2", "something forbidden"))
    assert err.code is ErrorCode.CONTENT_POLICY_VIOLATION and not err.retryable and "safety check" in err.message
    assert len(api_calls(server)) == 1


async def test_unsafe_results(server, provider) -> None:
    err = await failure(provider, generation("ideogram-v3", f"a {emu.OUTPUT_FLAGGED} scene", n=2))
    assert err.code is ErrorCode.CONTENT_POLICY_VIOLATION and "is_image_safe" in err.message
    result, _ = await run(provider, generation("ideogram-v3", f"a {emu.PARTLY_FLAGGED} scene", n=4))
    assert len(result.images) == 2  # the two safe ones, never more than the upstream produced


async def test_upstream_validation_is_invalid_request(server, provider) -> None:
    err = await failure(provider, generation("ideogram-v1", style="anime"))  # refused before calling
    assert err.code is ErrorCode.INVALID_REQUEST and api_calls(server) == []
    err = await failure(provider, generation("ideogram-v2a", negative_prompt="x"))
    assert err.code is ErrorCode.INVALID_REQUEST and api_calls(server) == []


async def test_in_flight_images_stay_under_the_limit(server, provider) -> None:
    """Five jobs of 4 images (20) against a limit of 10: never more than 10 in flight, no 429."""
    reset(server, job_seconds=0.4)
    results = await asyncio.gather(*(run(provider, generation("ideogram-v2", f"job {i}", n=4)) for i in range(5)))
    assert all(len(r.images) == 4 for r, _ in results)
    seen = inflight(server)
    assert seen["peak"] <= 8 and seen["rejected"] == 0  # two jobs of 4 fit in 10 slots
    assert provider.slots.free == provider.slots.capacity


async def test_a_limit_above_the_upstreams_is_retried_through_429s(server) -> None:
    reset(server, job_seconds=0.3)
    limit_upstream(server, 4)
    p = IdeogramProvider.build(settings(server, WORKER_RETRY_BUDGET_SECONDS="10"))
    try:
        results = await asyncio.gather(*(run(p, generation("ideogram-v2", f"job {i}", n=2)) for i in range(4)))
        seen = inflight(server)
    finally:
        await p.close()
        limit_upstream(server, 10)
    assert all(len(r.images) == 2 for r, _ in results)
    assert seen["rejected"] > 0 and seen["peak"] <= 4  # the upstream's 429s, retried until each job got in


async def test_5xx_then_success_and_down(server, provider) -> None:
    reset(server, fail_first=1, fail_status=500)
    result, _ = await run(provider, generation("ideogram-v2"))
    assert len(result.images) == 1 and len(api_calls(server)) == 2
    reset(server, down=True)
    err = await failure(provider, generation("ideogram-v2"))
    assert err.code is ErrorCode.PROVIDER_UNAVAILABLE and err.retryable


async def test_balance_and_key_problems_are_the_operators(server, provider) -> None:
    reset(server, fail_first=1, fail_status=402)
    err = await failure(provider, generation("ideogram-v2"))
    assert err.code is ErrorCode.PROVIDER_AUTH and err.retryable and len(api_calls(server)) == 1
    reset(server)
    p = IdeogramProvider.build(IdeogramSettings(**{"IDEOGRAM_API_KEY": "wrong-key-123", "IDEOGRAM_BASE_URL": server.url,
                                             **FAST_RETRIES}))
    try:
        err = await failure(p, generation("ideogram-v2"))
    finally:
        await p.close()
    assert err.code is ErrorCode.PROVIDER_AUTH and "wrong-key-123" not in err.message


async def test_expired_result_urls_fail_as_provider_errors(server, provider) -> None:
    server.state.host_file = lambda data, *a, **k: f"{server.url}/_files/expired.png"  # type: ignore[method-assign]
    try:
        err = await failure(provider, generation("ideogram-v2"))
    finally:
        del server.state.host_file
    assert err.code is ErrorCode.PROVIDER_ERROR and "download" in err.message


# ---- through the real mesh ---------------------------------------------------------------


@pytest.fixture(scope="module")
def ideogram_pool(mesh):
    """The emulator and a worker process serving the ideogram pool (needs ideogram in ROUTING_PROVIDERS)."""
    require_route(mesh, "ideogram")
    srv = EmulatorServer("ideogram", free_port(), api_key=KEY).start()
    instance = start_worker(mesh, "ideogram", IDEOGRAM_API_KEY=KEY, IDEOGRAM_BASE_URL=srv.url)
    yield srv
    mesh.stop(instance)
    srv.stop()


async def test_mesh_ideogram_v2_through_the_openai_api(ideogram_pool, http) -> None:
    reset(ideogram_pool)
    r = await http.post("/v1/images/generations", json={"model": "ideogram-v2", "prompt": "a sign that says OPEN",
                                                        "n": 2, "response_format": "url"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data) == 2
    image = opened(httpx.get(data[0]["url"]).content)
    assert image.format == "PNG" and image.size == (1024, 1024)
    assert data[0]["revised_prompt"].startswith("a sign that says OPEN, intricate")
    assert received(ideogram_pool)[0]["fields"]["num_images"] == 2
    r = await http.post("/v1/images/generations", json={"model": "ideogram-v2", "prompt": "a forbidden sign"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_policy_violation", r.text

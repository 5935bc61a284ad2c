"""The Stability adapter against the Stability v2beta emulator, over real HTTP."""

from __future__ import annotations

import httpx
import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from tests.emulators import stability as emu
from tests.emulators.harness import EmulatorServer, fake_image
from tests.support.ports import free_port
from tests.support.polling import wait_finished
from tests.support.provider_mesh import require_route, start_worker
from tests.support.provider_jobs import (
    EMULATED_INPUTS, FAST_RETRIES, api_calls, failure, generation, opened, received, reset, run,
)
from worker.providers.stability import StabilityProvider, StabilitySettings

KEY = "sk-test-stability-abcdef"


@pytest.fixture(scope="module")
def server():
    srv = EmulatorServer("stability", free_port(), api_key=KEY).start()
    yield srv
    srv.stop()


def settings(server: EmulatorServer, **env: str) -> StabilitySettings:
    return StabilitySettings(**{"STABILITY_API_KEY": KEY, "STABILITY_BASE_URL": server.url, **FAST_RETRIES, **EMULATED_INPUTS, **env})


@pytest.fixture
async def provider(server):
    reset(server)
    p = StabilityProvider.build(settings(server))
    yield p
    await p.close()


async def test_sd35_large_one_request_per_image_with_consecutive_seeds(server, provider) -> None:
    g = generation("sd-3.5-large", "a foggy pier", size="768x1344", n=3, seed=41, negative_prompt="people",
                   output_format=gen.OUTPUT_FORMAT_WEBP)
    result, rec = await run(provider, g)
    assert [(i.width, i.height) for i in result.images] == [(768, 1344)] * 3
    assert all(opened(i).format == "WEBP" for i in result.images)  # sd3 makes png; converted
    sent = sorted(received(server), key=lambda r: r["fields"]["seed"])
    assert [r["fields"]["seed"] for r in sent] == ["41", "42", "43"]
    assert sent[0] == {"endpoint": "sd3", "accept": "image/*", "image": None, "fields": {
        "prompt": "a foggy pier", "model": "sd3.5-large", "negative_prompt": "people", "aspect_ratio": "9:16",
        "seed": "41", "output_format": "png"}}
    assert rec.percents[-1] == 100.0 and len(rec.upstream_ids) == 1


@pytest.mark.parametrize(("model", "endpoint", "size", "pixels"), [
    ("sd-3.5-large-turbo", "sd3", "1344x768", (1344, 768)),
    ("sd-3.5-medium", "sd3", "1024x1024", (1024, 1024)),
    ("stable-image-core", "core", "1216x832", (1216, 832)),
    ("stable-image-ultra", "ultra", "640x1536", (640, 1536)),
])
async def test_each_family(server, provider, model, endpoint, size, pixels) -> None:
    result, _ = await run(provider, generation(model, size=size, output_format=gen.OUTPUT_FORMAT_JPEG))
    assert (result.images[0].width, result.images[0].height) == pixels
    assert opened(result.images[0]).format == "JPEG"
    assert received(server)[0]["endpoint"] == endpoint


async def test_core_takes_webp_and_style_presets(server, provider) -> None:
    await run(provider, generation("stable-image-core", output_format=gen.OUTPUT_FORMAT_WEBP, style="anime"))
    fields = received(server)[0]["fields"]
    assert fields["output_format"] == "webp" and fields["style_preset"] == "anime"


async def test_json_answers_are_read_too(server) -> None:
    reset(server)
    p = StabilityProvider.build(settings(server, STABILITY_ACCEPT="application/json"))
    try:
        result, _ = await run(p, generation("stable-image-ultra", size="1024x1024"))
    finally:
        await p.close()
    assert received(server)[0]["accept"] == "application/json"
    assert opened(result.images[0]).size == (1024, 1024)


async def test_image_to_image(server, provider) -> None:
    src = server.state.host_file(fake_image(832, 1216, "source", "JPEG"), "image/jpeg", "jpg")
    result, _ = await run(provider, generation("sd-3.5-large", "as an oil painting", image_url=src))
    assert opened(result.images[0]).size == (832, 1216)
    sent = received(server)[0]
    assert sent["image"] == "JPEG" and sent["fields"]["mode"] == "image-to-image" and "aspect_ratio" not in sent["fields"]
    assert sent["fields"]["strength"] == "0.6"


async def test_models_without_a_feature_are_refused_before_calling(server, provider) -> None:
    err = await failure(provider, generation("sd-3.5-large-turbo", negative_prompt="blur"))
    assert err.code is ErrorCode.INVALID_REQUEST
    src = server.state.host_file(fake_image(512, 512, "x"))
    err = await failure(provider, generation("stable-image-core", image_url=src))
    assert err.code is ErrorCode.INVALID_REQUEST
    err = await failure(provider, generation("stable-diffusion-xl"))
    assert err.code is ErrorCode.INVALID_REQUEST and "does not serve" in err.message
    assert api_calls(server) == []


async def test_moderation_refusal_is_content_policy_without_retry(server, provider) -> None:
    err = await failure(provider, generation("sd-3.5-large", "a forbidden thing"))
    assert err.code is ErrorCode.CONTENT_POLICY_VIOLATION and not err.retryable
    assert "content moderation" in err.message and len(api_calls(server)) == 1


@pytest.mark.parametrize("accept", ["image/*", "application/json"])
async def test_a_blurred_result_is_content_policy(server, accept) -> None:
    reset(server)
    p = StabilityProvider.build(settings(server, STABILITY_ACCEPT=accept))
    try:
        err = await failure(p, generation("stable-image-core", f"a {emu.OUTPUT_FLAGGED} scene"))
    finally:
        await p.close()
    assert err.code is ErrorCode.CONTENT_POLICY_VIOLATION and "CONTENT_FILTERED" in err.message
    assert len(api_calls(server)) == 1


async def test_429_then_success(server, provider) -> None:
    reset(server, fail_first=2, fail_status=429, retry_after=0.1)
    result, _ = await run(provider, generation("sd-3.5-medium"))
    assert len(result.images) == 1 and len(api_calls(server)) == 3


async def test_down_is_retryable_unavailable(server, provider) -> None:
    reset(server, down=True)
    err = await failure(provider, generation("sd-3.5-large", n=2))
    assert err.code is ErrorCode.PROVIDER_UNAVAILABLE and err.retryable


async def test_wrong_key_is_provider_auth(server) -> None:
    reset(server)
    p = StabilityProvider.build(StabilitySettings(**{"STABILITY_API_KEY": "sk-wrong", "STABILITY_BASE_URL": server.url,
                                               **FAST_RETRIES}))
    try:
        err = await failure(p, generation("sd-3.5-large"))
    finally:
        await p.close()
    assert err.code is ErrorCode.PROVIDER_AUTH and "sk-wrong" not in err.message
    assert len(api_calls(server)) == 1


async def test_png_compression_is_applied_by_conversion(server, provider) -> None:
    result, _ = await run(provider, generation("sd-3.5-large", output_format=gen.OUTPUT_FORMAT_JPEG, output_compression=20))
    low = result.images[0]
    reset(server)
    result, _ = await run(provider, generation("sd-3.5-large", output_format=gen.OUTPUT_FORMAT_JPEG, output_compression=95))
    assert opened(low).format == "JPEG" and len(low.data) < len(result.images[0].data)


# ---- through the real mesh ---------------------------------------------------------------


@pytest.fixture(scope="module")
def stability_pool(mesh):
    """The emulator and a worker process serving the stability pool (needs stability in ROUTING_PROVIDERS)."""
    require_route(mesh, "stability")
    srv = EmulatorServer("stability", free_port(), api_key=KEY).start()
    instance = start_worker(mesh, "stability", STABILITY_API_KEY=KEY, STABILITY_BASE_URL=srv.url)
    yield srv
    mesh.stop(instance)
    srv.stop()


async def test_mesh_sd35_large_through_the_jobs_api(stability_pool, http) -> None:
    reset(stability_pool)
    r = await http.post("/api/v2/generate", json={"model": "sd-3.5-large", "prompt": "a foggy pier", "size": "768x1344",
                                                  "seed": 42, "negative_prompt": "people"})
    assert r.status_code == 200, r.text
    body = await wait_finished(http, r.json()["id"])
    assert body["status"] == "completed", body
    image = opened(httpx.get(body["result_url"]).content)
    assert image.format == "WEBP" and image.size == (768, 1344)  # the jobs API's default format
    sent = received(stability_pool)[0]
    assert sent["fields"]["seed"] == "42" and sent["fields"]["aspect_ratio"] == "9:16"
    r = await http.post("/api/v2/generate", json={"model": "sd-3.5-large", "prompt": "a forbidden pier"})
    body = await wait_finished(http, r.json()["id"])
    assert body["status"] == "failed" and "content_policy_violation" in str(body.get("error")), body

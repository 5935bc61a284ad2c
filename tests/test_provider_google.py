"""The google adapter (Gemini image models via generateContent) against its emulator."""

from __future__ import annotations

import base64

import httpx
import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from tests.emulators import google as emu
from tests.emulators.harness import EmulatorServer, fake_image
from tests.support.ports import free_port
from tests.support.polling import wait_finished
from tests.support.provider_mesh import require_route, start_worker
from tests.support.provider_jobs import (
    EMULATED_INPUTS, FAST_RETRIES, api_calls, failure, generation, opened, received, reset, run,
)
from worker.providers.google import GoogleProvider, GoogleSettings

KEY = "AIza-test-google-key-000111"


@pytest.fixture(scope="module")
def server():
    srv = EmulatorServer("google", free_port(), api_key=KEY).start()
    yield srv
    srv.stop()


def settings(server: EmulatorServer, **env: str) -> GoogleSettings:
    return GoogleSettings(**{"GOOGLE_API_KEY": KEY, "GOOGLE_BASE_URL": f"{server.url}/v1beta", **FAST_RETRIES, **EMULATED_INPUTS, **env})


@pytest.fixture
async def provider(server):
    reset(server)
    p = GoogleProvider.build(settings(server))
    yield p
    await p.close()


async def test_gemini_image_one_call_per_image_with_summed_usage(server, provider) -> None:
    g = generation("gemini-2.5-flash-image", "a lighthouse in a storm", size="1344x768", n=2,
                   output_format=gen.OUTPUT_FORMAT_WEBP)
    result, rec = await run(provider, g)
    assert [opened(i).size for i in result.images] == [(1344, 768)] * 2
    assert all(i.output_format == gen.OUTPUT_FORMAT_WEBP and opened(i).format == "WEBP" for i in result.images)
    sent = received(server)
    assert len(sent) == 2 and sent[0]["generationConfig"] == {"responseModalities": ["IMAGE"],
                                                              "imageConfig": {"aspectRatio": "16:9"}}
    u = result.usage
    assert (u.input_tokens, u.input_text_tokens, u.output_tokens) == (10, 10, 2 * (1290 + 8))
    assert u.total_tokens == u.input_tokens + u.output_tokens
    assert rec.percents[-1] == 100.0 and len(rec.upstream_ids) == 1


@pytest.mark.parametrize("model", ["gemini-3.1-flash-image", "gemini-3-pro-image", "gemini-3.1-flash-lite-image"])
async def test_other_gemini_image_models(server, provider, model) -> None:
    result, _ = await run(provider, generation(model, size="832x1248"))
    assert opened(result.images[0]).size == (832, 1248)
    assert received(server)[0]["model"] == model


async def test_edit_sends_the_input_image_first(server, provider) -> None:
    src = server.state.host_file(fake_image(640, 480, "photo", "JPEG"), "image/jpeg", "jpg")
    g = generation("gemini-2.5-flash-image", "make it winter", kind=gen.GENERATION_KIND_EDIT, image_url=src)
    result, _ = await run(provider, g)
    assert received(server)[0]["images"] == 1 and result.usage.input_image_tokens == 258
    err = await failure(provider, generation("gemini-2.5-flash-image", "x", kind=gen.GENERATION_KIND_EDIT))
    assert err.code is ErrorCode.INVALID_REQUEST


async def test_a_blocked_prompt_is_content_policy_without_retry(server, provider) -> None:
    err = await failure(provider, generation("gemini-2.5-flash-image", "something forbidden"))
    assert err.code is ErrorCode.CONTENT_POLICY_VIOLATION and "blockReason" in err.message and not err.retryable
    assert len(api_calls(server)) == 1


async def test_a_withheld_image_is_content_policy(server, provider) -> None:
    err = await failure(provider, generation("gemini-2.5-flash-image", f"a {emu.OUTPUT_FLAGGED} scene"))
    assert err.code is ErrorCode.CONTENT_POLICY_VIOLATION and "IMAGE_SAFETY" in err.message


async def test_no_image_is_content_policy(server, provider) -> None:
    """§14: blocked output is still a 200; one without inlineData is a content-policy failure."""
    err = await failure(provider, generation("gemini-2.5-flash-image", f"{emu.NO_IMAGE_WORD} now"))
    assert err.code is ErrorCode.CONTENT_POLICY_VIOLATION and "NO_IMAGE" in err.message and not err.retryable


async def test_shut_down_previews_are_refused_naming_their_successor(server, provider) -> None:
    err = await failure(provider, generation("gemini-3-pro-image-preview"))
    assert err.code is ErrorCode.INVALID_REQUEST and "gemini-3-pro-image" in err.message
    assert api_calls(server) == []


async def test_imagen_and_unknown_models_are_refused_before_calling(server, provider) -> None:
    err = await failure(provider, generation("imagen-3.0-generate-002"))
    assert err.code is ErrorCode.INVALID_REQUEST and "shut down" in err.message
    err = await failure(provider, generation("gemini-2.5-pro"))
    assert err.code is ErrorCode.INVALID_REQUEST
    assert api_calls(server) == []


async def test_resource_exhausted_then_success(server, provider) -> None:
    reset(server, fail_first=2, fail_status=429)
    result, _ = await run(provider, generation("gemini-2.5-flash-image"))
    assert len(result.images) == 1 and len(api_calls(server)) == 3


async def test_down_is_retryable_unavailable(server, provider) -> None:
    reset(server, down=True)
    err = await failure(provider, generation("gemini-2.5-flash-image"))
    assert err.code is ErrorCode.PROVIDER_UNAVAILABLE and err.retryable


async def test_a_rejected_key_is_provider_auth_and_never_echoed(server) -> None:
    reset(server)
    wrong = "AIza-wrong-key-999"
    p = GoogleProvider.build(GoogleSettings(**{"GOOGLE_API_KEY": wrong, "GOOGLE_BASE_URL": f"{server.url}/v1beta", **FAST_RETRIES}))
    try:
        err = await failure(p, generation("gemini-2.5-flash-image"))
    finally:
        await p.close()
    assert err.code is ErrorCode.PROVIDER_AUTH and wrong not in err.message and len(api_calls(server)) == 1


async def test_model_names_can_be_mapped(server, monkeypatch) -> None:
    reset(server)
    monkeypatch.setenv("GOOGLE_MODELS", '{"nano-banana": "gemini-2.5-flash-image"}')
    p = GoogleProvider.build(settings(server))
    try:
        await run(p, generation("nano-banana"))
    finally:
        await p.close()
    assert received(server)[0]["model"] == "gemini-2.5-flash-image"


# ---- through the real mesh ---------------------------------------------------------------


@pytest.fixture(scope="module")
def google_pool(mesh):
    """The emulator and a worker process serving the google pool (needs google in ROUTING_PROVIDERS
    and gemini-2.5-flash-image in the catalog)."""
    require_route(mesh, "google")
    srv = EmulatorServer("google", free_port(), api_key=KEY).start()
    instance = start_worker(mesh, "google", GOOGLE_API_KEY=KEY, GOOGLE_BASE_URL=f"{srv.url}/v1beta")
    yield srv
    mesh.stop(instance)
    srv.stop()


async def test_mesh_gemini_image_through_the_jobs_api(google_pool, http) -> None:
    reset(google_pool)
    r = await http.post("/api/v2/generate", json={"model": "gemini-2.5-flash-image", "prompt": "a red kite",
                                                  "size": "1024x1024", "format": "png"})
    assert r.status_code == 200, r.text
    body = await wait_finished(http, r.json()["id"])
    assert body["status"] == "completed", body
    image = opened(httpx.get(body["result_url"]).content)
    assert image.format == "PNG" and image.size == (1024, 1024)
    assert received(google_pool)[0]["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1"}
    r = await http.post("/api/v2/generate", json={"model": "gemini-2.5-flash-image", "prompt": "a forbidden kite"})
    body = await wait_finished(http, r.json()["id"])
    assert body["status"] == "failed" and "content_policy_violation" in str(body.get("error")), body


async def test_mesh_gemini_edits_with_reference_images_through_the_openai_sdk(google_pool, edge_url, api_key) -> None:
    import openai

    reset(google_pool)
    client = openai.AsyncOpenAI(base_url=f"{edge_url}/v1", api_key=api_key, max_retries=0, timeout=120)
    images = [(f"ref{i}.png", fake_image(300 + 40 * i, 200, f"ref{i}"), "image/png") for i in range(3)]
    resp = await client.images.edit(model="gemini-3-pro-image", image=images, prompt="put all three on one shelf",
                                    size="1344x768", response_format="b64_json")
    assert opened(base64.b64decode(resp.data[0].b64_json)).size == (1344, 768)
    [sent] = received(google_pool)
    assert (sent["model"], sent["images"]) == ("gemini-3-pro-image", 3)
    with pytest.raises(openai.BadRequestError) as exc:  # gemini-2.5-flash-image takes at most 3
        await client.images.edit(model="gemini-2.5-flash-image", image=images * 2, prompt="x")
    assert exc.value.body["param"] == "image" and "at most 3" in exc.value.body["message"]

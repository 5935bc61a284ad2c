"""The Ideogram adapter against the Ideogram emulator, over real HTTP."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from tests.emulators import ideogram as emu
from tests.emulators.harness import EmulatorServer, fake_image
from tests.support.images import mask_bytes
from tests.support.polling import wait_finished
from tests.support.ports import free_port
from tests.support.provider_mesh import require_route, start_worker
from tests.support.provider_jobs import (
    EMULATED_INPUTS, FAST_RETRIES, api_calls, failure, generation, opened, received, reset, run,
)
from worker.providers.ideogram import IdeogramProvider, IdeogramSettings

KEY = "ideogram-test-key-987654"


@pytest.fixture(scope="module")
def server():
    srv = EmulatorServer("ideogram", free_port(), api_key=KEY).start()
    yield srv
    srv.stop()


def settings(server: EmulatorServer, **env: str) -> IdeogramSettings:
    return IdeogramSettings(**{"IDEOGRAM_API_KEY": KEY, "IDEOGRAM_BASE_URL": server.url, **FAST_RETRIES,
                               **EMULATED_INPUTS, **env})


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


# ---- Ideogram 3.0: edit (inpaint), remix, reframe, replace background ------------------------


def hosted(server: EmulatorServer, data: bytes) -> str:
    return server.state.host_file(data)


def edit(model: str, prompt: str, server: EmulatorServer, *, size: str = "1024x1024", width: int = 1024,
         height: int = 1024, mask: bool = False, **params) -> gen.Generation:
    refs = [gen.InputImage(url=hosted(server, fake_image(width, height, f"in/{prompt}")), role="image")]
    if mask:
        refs.append(gen.InputImage(url=hosted(server, mask_bytes(width, height)), role="mask"))
    return generation(model, prompt, size=size, kind=gen.GENERATION_KIND_EDIT, input_images=refs, **params)


async def test_v3_edit_with_a_mask_is_inpaint_with_black_marking_the_area(server, provider) -> None:
    g = edit("ideogram-v3", "add a red door", server, width=512, height=512, size="auto", mask=True, n=2,
             style="stylized")
    result, rec = await run(provider, g)
    sent = received(server)[0]
    assert sent["path"] == "/v1/ideogram-v3/inpaint"
    assert sent["fields"] == {"prompt": "add a red door", "rendering_speed": "DEFAULT", "seed": "42",
                              "num_images": "2", "style_type": "STYLIZED"}
    # OpenAI's mask: the transparent right half is the area to edit; Ideogram's: black
    assert sent["files"]["mask"][0]["black_pixels"] == 256 * 512
    assert [opened(i).size for i in result.images] == [(512, 512)] * 2 and rec.percents[-1] == 100.0


async def test_v3_edit_falls_back_to_the_legacy_edit_path(server, provider) -> None:
    httpx.post(f"{server.url}/_emulator/ideogram/endpoints", json={"inpaint": False}).raise_for_status()
    try:
        result, _ = await run(provider, edit("ideogram-v3-turbo", "a hat", server, mask=True))
    finally:
        httpx.post(f"{server.url}/_emulator/ideogram/endpoints", json={"inpaint": True}).raise_for_status()
    assert [r["path"] for r in received(server)] == ["/v1/ideogram-v3/edit"]
    assert [c.path for c in api_calls(server)] == ["/v1/ideogram-v3/inpaint", "/v1/ideogram-v3/edit"]
    assert len(result.images) == 1


async def test_v3_edit_without_a_mask_is_remix(server, provider) -> None:
    g = edit("ideogram-v3-quality", "as a watercolor", server, size="1344x768", negative_prompt="text")
    result, _ = await run(provider, g)
    sent = received(server)[0]
    assert sent["path"] == "/v1/ideogram-v3/remix"
    assert sent["fields"] == {"prompt": "as a watercolor", "rendering_speed": "QUALITY", "seed": "42",
                              "num_images": "1", "aspect_ratio": "16x9", "negative_prompt": "text"}
    assert opened(result.images[0]).size == (1376, 768)
    assert result.images[0].revised_prompt.startswith("as a watercolor, intricate")


async def test_reframe_takes_a_square_image_to_the_asked_size(server, provider) -> None:
    result, _ = await run(provider, edit("ideogram-v3-reframe", "", server, size="1344x768"))
    sent = received(server)[0]
    assert sent["path"] == "/v1/ideogram-v3/reframe"
    assert sent["fields"] == {"resolution": "1344x768", "rendering_speed": "DEFAULT", "seed": "42", "num_images": "1"}
    assert opened(result.images[0]).size == (1344, 768) and result.images[0].revised_prompt == ""
    reset(server)
    err = await failure(provider, edit("ideogram-v3-reframe", "", server, width=600, height=400))
    assert err.code is ErrorCode.INVALID_REQUEST and "square" in err.message and api_calls(server) == []


async def test_replace_background_keeps_the_subject(server, provider) -> None:
    result, _ = await run(provider, edit("ideogram-v3-replace-background", "a beach at noon", server,
                                         width=768, height=1344, size="auto"))
    sent = received(server)[0]
    assert sent["path"] == "/v1/ideogram-v3/replace-background"
    assert sent["fields"] == {"prompt": "a beach at noon", "rendering_speed": "DEFAULT", "seed": "42",
                              "num_images": "1"}
    assert opened(result.images[0]).size == (768, 1344)


async def test_a_character_reference_goes_to_generate_as_character_reference_images(server, provider) -> None:
    g = edit("ideogram-v3-character-turbo", "the same woman as a knight", server, width=640, height=800,
             size="2:3", n=2, style="fiction")
    result, _ = await run(provider, g)
    sent = received(server)[0]
    assert sent["path"] == "/v1/ideogram-v3/generate"
    assert sent["fields"] == {"prompt": "the same woman as a knight", "rendering_speed": "TURBO",
                              "aspect_ratio": "2x3", "seed": "42", "num_images": "2", "style_type": "FICTION"}
    assert sent["files"] == {"character_reference_images": [{"content_type": "image/png", "size": [640, 800]}]}
    assert len(result.images) == 2
    reset(server)
    err = await failure(provider, edit("ideogram-v3-character", "a knight", server, mask=True))
    assert err.code is ErrorCode.INVALID_REQUEST and "one character image and no mask" in err.message
    assert api_calls(server) == []


async def test_provider_options_magic_prompt_and_remix_weight(server, provider) -> None:
    g = edit("ideogram-v3", "as a watercolor", server)
    g.params.provider_options.update({"image_weight": 80, "magic_prompt": "OFF"})
    await run(provider, g)
    sent = received(server)[0]
    assert sent["path"] == "/v1/ideogram-v3/remix"
    assert (sent["fields"]["image_weight"], sent["fields"]["magic_prompt"]) == ("80", "OFF")
    g = edit("ideogram-v3", "add a door", server, mask=True)
    g.params.provider_options.update({"image_weight": 80})
    err = await failure(provider, g)
    assert err.code is ErrorCode.INVALID_REQUEST and "image_weight applies to a remix" in err.message


async def test_v3_image_calls_refuse_what_the_endpoint_does_not_take(server, provider) -> None:
    for g, words in [
        (edit("ideogram-v3", "x", server, mask=True, negative_prompt="n"), "negative prompt"),
        (edit("ideogram-v3-replace-background", "x", server, style="design"), "style"),
        (edit("ideogram-v3-replace-background", "x", server, mask=True), "no mask"),
        (edit("ideogram-v2", "x", server), "ideogram-v3"),
        (generation("ideogram-v3-reframe", "x"), "input image"),
    ]:
        err = await failure(provider, g)
        assert err.code is ErrorCode.INVALID_REQUEST and words in err.message, err.message
    assert api_calls(server) == []


async def test_v3_edit_refusals_and_magic_prompt(server) -> None:
    reset(server)
    p = IdeogramProvider.build(settings(server, IDEOGRAM_MAGIC_PROMPT="ON"))
    try:
        err = await failure(p, edit("ideogram-v3", "something forbidden", server, mask=True))
        assert err.code is ErrorCode.CONTENT_POLICY_VIOLATION and not err.retryable and len(api_calls(server)) == 1
        await run(p, edit("ideogram-v3", "a cat", server))
        await run(p, edit("ideogram-v3-reframe", "", server))
    finally:
        await p.close()
    assert received(server)[1]["fields"]["magic_prompt"] == "ON"
    assert "magic_prompt" not in received(server)[2]["fields"], "reframe takes no magic prompt"


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


async def test_mesh_ideogram_v3_edit_with_a_mask_through_the_openai_sdk(ideogram_pool, edge_url, api_key) -> None:
    """/v1/images/edits with a mask is Ideogram 3.0's inpaint; the uploads are stored and read
    by the worker, the mask's transparent half reaches Ideogram as black."""
    import openai

    reset(ideogram_pool)
    client = openai.AsyncOpenAI(base_url=f"{edge_url}/v1", api_key=api_key, max_retries=0, timeout=120)
    resp = await client.images.edit(model="ideogram-v3-turbo", prompt="add a red door", size="1024x1024",
                                    image=("in.png", fake_image(1024, 1024, "door"), "image/png"),
                                    mask=("mask.png", mask_bytes(1024, 1024), "image/png"), response_format="url")
    assert resp.model_extra["model"] == "ideogram-v3-turbo" and resp.model_extra["cost_usd"] == pytest.approx(0.03)
    assert opened(httpx.get(resp.data[0].url).content).size == (1024, 1024)
    sent = received(ideogram_pool)[0]
    assert sent["path"] == "/v1/ideogram-v3/inpaint" and sent["fields"]["rendering_speed"] == "TURBO"
    assert sent["files"]["mask"][0]["black_pixels"] == 512 * 1024


async def test_mesh_reframe_and_replace_background_and_v3_generate(ideogram_pool, http) -> None:
    reset(ideogram_pool)
    r = await http.post("/v1/images/edits", files={"image": ("sq.png", fake_image(512, 512, "square"), "image/png")},
                        data={"model": "ideogram-v3-reframe", "size": "1344x768", "response_format": "b64_json"})
    assert r.status_code == 200, r.text
    assert r.json()["size"] == "1344x768" and received(ideogram_pool)[0]["fields"]["resolution"] == "1344x768"
    r = await http.post("/v1/images/edits", files={"image": ("wide.png", fake_image(600, 400, "w"), "image/png")},
                        data={"model": "ideogram-v3-reframe", "size": "1344x768"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "image" and "square" in r.json()["error"]["message"]
    r = await http.post("/v1/images/edits", files={"image": ("p.png", fake_image(768, 1344, "person"), "image/png")},
                        data={"model": "ideogram-v3-replace-background", "prompt": "a beach at noon"})
    assert r.status_code == 200, r.text
    assert received(ideogram_pool)[1]["path"] == "/v1/ideogram-v3/replace-background"
    r = await http.post("/api/v2/generate", json={"model": "ideogram-v3-quality", "prompt": "a poster", "style": "design",
                                                  "size": "9:16"})
    assert r.status_code == 200, r.text
    done = await wait_finished(http, r.json()["id"])
    assert done["status"] == "completed" and done["tokens_spent"] == 9, done
    assert received(ideogram_pool)[2]["fields"]["style_type"] == "DESIGN"


async def test_mesh_character_reference_by_upload_and_by_image_url(ideogram_pool, http) -> None:
    reset(ideogram_pool)
    character = fake_image(600, 900, "character")
    r = await http.post("/v1/images/edits", files={"image": ("me.png", character, "image/png")},
                        data={"model": "ideogram-v3-character", "prompt": "the same man on the moon",
                              "size": "9:16", "response_format": "url"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "ideogram-v3-character" and body["cost_usd"] == pytest.approx(0.15)
    sent = received(ideogram_pool)[0]
    assert sent["path"] == "/v1/ideogram-v3/generate" and sent["fields"]["rendering_speed"] == "DEFAULT"
    assert sent["files"]["character_reference_images"][0]["size"] == [600, 900]
    data_url = "data:image/png;base64," + base64.b64encode(character).decode()
    r = await http.post("/api/v2/generate", json={"model": "ideogram-v3-character-quality", "prompt": "at sea",
                                                  "image_url": data_url})
    assert r.status_code == 200, r.text
    done = await wait_finished(http, r.json()["id"])
    assert done["status"] == "completed" and done["tokens_spent"] == 20, done
    assert received(ideogram_pool)[1]["files"]["character_reference_images"][0]["size"] == [600, 900]
    # Without the character image the model has nothing to work from: a 400 before anything is charged.
    r = await http.post("/api/v2/generate", json={"model": "ideogram-v3-character", "prompt": "at sea"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model", r.text

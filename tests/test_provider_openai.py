"""The OpenAI adapter against the OpenAI emulator, over real HTTP."""

from __future__ import annotations

import base64
import time

import openai
import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.storage.v1 import storage_service_pb2 as storage_pb
from pixelmesh.storage.v1 import storage_service_pb2_grpc
from svckit.errors import ErrorCode
from svckit.grpc_client import channel as grpc_channel
from tests.emulators import openai as emu
from tests.emulators.harness import EmulatorServer, fake_image
from tests.support.images import mask_bytes
from tests.support.openai_contract import assert_images_response
from tests.support.ports import free_port
from tests.support.provider_mesh import require_route, start_worker
from tests.support.provider_jobs import (
    EMULATED_INPUTS, FAST_RETRIES, Recorder, api_calls, failure, generation, opened, received, reset, run,
)
from worker.providers import ProviderError
from worker.providers.openai import OpenAIProvider, OpenAISettings

KEY = "sk-test-openai-0123456789"


@pytest.fixture(scope="module")
def server():
    srv = EmulatorServer("openai", free_port(), api_key=KEY).start()
    yield srv
    srv.stop()


def settings(server: EmulatorServer, **env: str) -> OpenAISettings:
    return OpenAISettings(**{"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": f"{server.url}/v1", **FAST_RETRIES, **EMULATED_INPUTS, **env})


@pytest.fixture
async def provider(server):
    reset(server)
    p = OpenAIProvider.build(settings(server))
    yield p
    await p.close()


# ---- generations, per model family -------------------------------------------------------


async def test_dall_e_2_returns_n_images_inline(server, provider) -> None:
    result, rec = await run(provider, generation("dall-e-2", size="512x512", n=2, quality="standard"))
    assert [(i.width, i.height) for i in result.images] == [(512, 512), (512, 512)]
    assert all(opened(i).format == "PNG" for i in result.images)
    assert result.usage is None
    sent = received(server)[0]["fields"]
    assert sent == {"model": "dall-e-2", "prompt": "a lighthouse at dusk", "n": 2, "size": "512x512",
                    "quality": "standard", "response_format": "b64_json"}
    assert rec.percents[-1] == 100.0 and rec.upstream_ids[0].startswith("req_")


async def test_dall_e_url_results_are_downloaded_and_converted(server) -> None:
    reset(server)
    p = OpenAIProvider.build(settings(server, OPENAI_DALLE_RESPONSE_FORMAT="url"))
    try:
        result, _ = await run(p, generation("dall-e-2", size="256x256", output_format=gen.OUTPUT_FORMAT_JPEG,
                                            output_compression=50))
    finally:
        await p.close()
    assert received(server)[0]["fields"]["response_format"] == "url"
    image = result.images[0]
    assert opened(image).format == "JPEG" and image.output_format == gen.OUTPUT_FORMAT_JPEG
    assert (image.width, image.height) == (256, 256)


async def test_dall_e_3_revised_prompt_style_and_hd(server, provider) -> None:
    result, _ = await run(provider, generation("dall-e-3", "a red fox", size="1792x1024", quality="hd", style="natural"))
    image = result.images[0]
    assert (image.width, image.height) == (1792, 1024)
    assert image.revised_prompt == "A detailed, carefully composed rendering of a red fox"
    sent = received(server)[0]["fields"]
    assert sent["style"] == "natural" and sent["quality"] == "hd" and "background" not in sent


async def test_gpt_image_usage_and_format_are_the_upstreams(server, provider) -> None:
    g = generation("gpt-image-1", "a watercolor fox", size="1024x1536", quality="medium",
                   output_format=gen.OUTPUT_FORMAT_WEBP, output_compression=60, moderation="low", user="user-1")
    result, _ = await run(provider, g)
    sent = received(server)[0]["fields"]
    assert sent == {"model": "gpt-image-1", "prompt": "a watercolor fox", "n": 1, "size": "1024x1536",
                    "quality": "medium", "output_format": "webp", "output_compression": 60, "moderation": "low",
                    "user": "user-1"}
    # Encoded once, by the upstream: the very bytes the model produced, not a re-encoding.
    req = {"model": "gpt-image-1", "size": "1024x1536", "output_format": "webp", "compression": 60, "background": "auto"}
    assert result.images[0].data == emu.render(req, "a watercolor fox/0")
    assert result.images[0].output_format == gen.OUTPUT_FORMAT_WEBP
    u = result.usage
    assert (u.input_tokens, u.input_text_tokens, u.input_image_tokens, u.output_tokens, u.total_tokens) == (3, 3, 0, 1056, 1059)


async def test_gpt_image_transparent_background(server, provider) -> None:
    result, _ = await run(provider, generation("gpt-image-1.5", size="auto", background="transparent", n=2))
    assert len(result.images) == 2
    image = opened(result.images[0])
    assert image.mode == "RGBA" and image.getpixel((0, 0))[3] == 0
    assert received(server)[0]["fields"]["size"] == "auto"


async def test_gpt_image_2_free_sizes_and_no_transparency(server, provider) -> None:
    result, _ = await run(provider, generation("gpt-image-2", size="1280x720"))
    assert (result.images[0].width, result.images[0].height) == (1280, 720)
    reset(server)
    err = await failure(provider, generation("gpt-image-2", background="transparent"))
    assert err.code is ErrorCode.INVALID_REQUEST and not err.retryable
    assert api_calls(server) == []


async def test_model_names_can_be_pinned_in_settings(server, monkeypatch) -> None:
    reset(server)
    monkeypatch.setenv("OPENAI_MODELS", '{"gpt-image-2": "gpt-image-2-2026-04-21"}')  # JSON, as deployed
    p = OpenAIProvider.build(settings(server))
    try:
        await run(p, generation("gpt-image-2", size="1024x1024"))
    finally:
        await p.close()
    assert received(server)[0]["fields"]["model"] == "gpt-image-2-2026-04-21"


# ---- streaming --------------------------------------------------------------------------


async def test_streamed_partial_images_become_progress(server, provider) -> None:
    g = generation("gpt-image-1", "a harbour", quality="low", stream=True, partial_images=2, n=2)
    result, rec = await run(provider, g)
    assert len(rec.partials) == 4 and len(result.images) == 2
    assert all(opened(p).size == (1024, 1024) for p in rec.partials)
    assert rec.percents == sorted(rec.percents) and rec.percents[-1] == 100.0
    assert result.usage.output_tokens == 272  # from the completed event
    sent = received(server)[0]["fields"]
    assert sent["stream"] is True and sent["partial_images"] == 2


async def test_a_stream_is_retried_until_it_opens(server, provider) -> None:
    reset(server, fail_first=2, fail_status=502)
    result, rec = await run(provider, generation("gpt-image-1", stream=True, partial_images=1))
    assert len(result.images) == 1 and len(rec.partials) == 1
    assert len(api_calls(server)) == 3


async def test_output_moderation_mid_stream_is_a_content_policy_failure(server, provider) -> None:
    rec = Recorder()
    with pytest.raises(ProviderError) as exc:
        await provider.generate(generation("gpt-image-1", f"a {emu.OUTPUT_FLAGGED} scene", stream=True,
                                           partial_images=1), rec.progress)
    assert exc.value.code is ErrorCode.CONTENT_POLICY_VIOLATION and not exc.value.retryable
    assert len(rec.partials) == 1 and len(api_calls(server)) == 1


# ---- refusals and faults ----------------------------------------------------------------


@pytest.mark.parametrize("model", ["dall-e-2", "dall-e-3", "gpt-image-1"])
async def test_each_refusal_shape_is_content_policy_without_retry(server, provider, model) -> None:
    err = await failure(provider, generation(model, "something forbidden"))
    assert err.code is ErrorCode.CONTENT_POLICY_VIOLATION and not err.retryable
    assert len(api_calls(server)) == 1


async def test_output_moderation_is_content_policy(server, provider) -> None:
    err = await failure(provider, generation("gpt-image-1.5", f"a {emu.OUTPUT_FLAGGED} scene"))
    assert err.code is ErrorCode.CONTENT_POLICY_VIOLATION and "safety system" in err.message


async def test_5xx_then_success(server, provider) -> None:
    reset(server, fail_first=2, fail_status=503)
    result, _ = await run(provider, generation("dall-e-3"))
    assert len(result.images) == 1 and len(api_calls(server)) == 3


async def test_rate_limit_honours_retry_after(server, provider) -> None:
    reset(server, fail_first=1, fail_status=429, retry_after=0.5)
    started = time.monotonic()
    await run(provider, generation("dall-e-2", size="256x256"))
    assert time.monotonic() - started >= 0.5 and len(api_calls(server)) == 2


async def test_down_is_retryable_unavailable_within_the_budget(server, provider) -> None:
    reset(server, down=True)
    started = time.monotonic()
    err = await failure(provider, generation("gpt-image-1"))
    assert err.code is ErrorCode.PROVIDER_UNAVAILABLE and err.retryable
    assert time.monotonic() - started < 3 + 2 and len(api_calls(server)) >= 2


async def test_a_wrong_key_is_provider_auth_and_never_echoed(server) -> None:
    reset(server)
    wrong = "sk-wrong-abcdefghijklmnop"
    p = OpenAIProvider.build(OpenAISettings(**{"OPENAI_API_KEY": wrong, "OPENAI_BASE_URL": f"{server.url}/v1", **FAST_RETRIES}))
    try:
        err = await failure(p, generation("dall-e-2", size="256x256"))
    finally:
        await p.close()
    assert err.code is ErrorCode.PROVIDER_AUTH and wrong not in err.message
    assert len(api_calls(server)) == 1


async def test_upstream_validation_errors_are_invalid_requests(server, provider) -> None:
    err = await failure(provider, generation("dall-e-3", n=2))
    assert err.code is ErrorCode.INVALID_REQUEST and not err.retryable and "n=1" in err.message
    err = await failure(provider, generation("dall-e-2", size="1792x1024"))
    assert err.code is ErrorCode.INVALID_REQUEST and "Invalid size" in err.message


async def test_a_slow_upstream_times_out_retryably(server) -> None:
    reset(server, latency_ms=1500)
    p = OpenAIProvider.build(settings(server, WORKER_JOB_TIMEOUT_SECONDS="0.5"))
    try:
        err = await failure(p, generation("dall-e-2", size="256x256"))
    finally:
        await p.close()
    assert err.code is ErrorCode.TIMEOUT and err.retryable


def test_a_missing_key_stops_the_worker_naming_it(monkeypatch, capsys) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(SystemExit):
        OpenAIProvider.from_env()
    assert "OPENAI_API_KEY" in capsys.readouterr().err


# ---- edits and variations ----------------------------------------------------------------


def hosted(server: EmulatorServer, data: bytes, ext: str = "png", mime: str = "image/png") -> str:
    return server.state.host_file(data, mime, ext)


async def test_gpt_image_edit_sends_images_and_mask(server, provider) -> None:
    a = hosted(server, fake_image(1024, 1024, "input-a"))
    b = hosted(server, fake_image(1024, 1024, "input-b", "JPEG"), "jpg", "image/jpeg")
    mask = hosted(server, fake_image(1024, 1024, "mask"))  # RGB: the adapter adds the alpha channel
    g = generation("gpt-image-1", "add a hat", kind=gen.GENERATION_KIND_EDIT, input_images=[
        gen.InputImage(url=a, role="image"), gen.InputImage(url=b, role="image"), gen.InputImage(url=mask, role="mask")])
    result, _ = await run(provider, g)
    assert len(result.images) == 1 and result.usage.input_image_tokens == 2 * 194
    call = received(server)[0]
    assert call["path"] == "/v1/images/edits"
    assert [p["content_type"] for p in call["files"]["image[]"]] == ["image/png", "image/jpeg"]
    assert call["files"]["mask"][0]["content_type"] == "image/png"
    assert "moderation" not in call["fields"] and call["fields"]["prompt"] == "add a hat"


async def test_input_fidelity_reaches_gpt_image_edits_but_not_the_mini(server, provider) -> None:
    src = hosted(server, fake_image(1024, 1024, "fidelity"))
    g = generation("gpt-image-1.5", "keep the face", kind=gen.GENERATION_KIND_EDIT, input_fidelity="high",
                   input_images=[gen.InputImage(url=src, role="image")])
    await run(provider, g)
    assert received(server)[0]["fields"]["input_fidelity"] == "high"
    reset(server)
    g = generation("gpt-image-1-mini", "keep the face", kind=gen.GENERATION_KIND_EDIT, input_fidelity="high",
                   input_images=[gen.InputImage(url=src, role="image")])
    err = await failure(provider, g)
    assert err.code is ErrorCode.INVALID_REQUEST and "input_fidelity" in err.message
    assert api_calls(server) == []


async def test_gpt_image_1_mini_generates_and_edits(server, provider) -> None:
    result, _ = await run(provider, generation("gpt-image-1-mini", "a kite", size="1536x1024", quality="low", n=2))
    assert [opened(i).size for i in result.images] == [(1536, 1024)] * 2 and result.usage.output_tokens == 2 * 272
    src = hosted(server, fake_image(1024, 1536, "mini-edit"))
    g = generation("gpt-image-1-mini", "in ink", size="auto", kind=gen.GENERATION_KIND_EDIT,
                   input_images=[gen.InputImage(url=src, role="image")])
    result, _ = await run(provider, g)
    assert opened(result.images[0]).size == (1024, 1536)
    assert [r["fields"]["model"] for r in received(server)] == ["gpt-image-1-mini"] * 2


async def test_gpt_image_2_edits_at_a_free_size(server, provider) -> None:
    src = hosted(server, fake_image(1536, 864, "wide-input"))
    g = generation("gpt-image-2", "make it dusk", size="1536x864", kind=gen.GENERATION_KIND_EDIT,
                   input_fidelity="low", input_images=[gen.InputImage(url=src, role="image")])
    result, _ = await run(provider, g)
    assert opened(result.images[0]).size == (1536, 864)
    sent = received(server)[0]
    assert sent["path"] == "/v1/images/edits" and sent["fields"]["size"] == "1536x864"
    reset(server)
    g = generation("gpt-image-2", "x", size="1000x1000", kind=gen.GENERATION_KIND_EDIT,
                   input_images=[gen.InputImage(url=src, role="image")])
    err = await failure(provider, g)  # what routing refuses, the upstream refuses too
    assert err.code is ErrorCode.INVALID_REQUEST and "multiples of 16" in err.message


async def test_dall_e_2_edit_takes_one_png(server, provider) -> None:
    jpeg = hosted(server, fake_image(512, 512, "jpeg-in", "JPEG"), "jpg", "image/jpeg")
    g = generation("dall-e-2", "make it night", size="512x512", kind=gen.GENERATION_KIND_EDIT, image_url=jpeg)
    result, _ = await run(provider, g)
    assert (result.images[0].width, result.images[0].height) == (512, 512)
    call = received(server)[0]
    assert call["files"]["image"][0]["content_type"] == "image/png" and call["fields"]["response_format"] == "b64_json"


async def test_streamed_edit(server, provider) -> None:
    src = hosted(server, fake_image(1024, 1536, "portrait"))
    g = generation("gpt-image-1.5", "in watercolor", size="auto", kind=gen.GENERATION_KIND_EDIT, stream=True,
                   partial_images=1, input_images=[gen.InputImage(url=src, role="image")])
    result, rec = await run(provider, g)
    assert len(rec.partials) == 1 and opened(result.images[0]).size == (1024, 1536)


async def test_dall_e_2_variations(server, provider) -> None:
    src = hosted(server, fake_image(256, 256, "variation-source"))
    g = generation("dall-e-2", "", size="256x256", n=3, kind=gen.GENERATION_KIND_VARIATION, image_url=src)
    result, _ = await run(provider, g)
    assert len(result.images) == 3
    assert received(server)[0]["path"] == "/v1/images/variations" and "prompt" not in received(server)[0]["fields"]


async def test_variations_of_other_models_and_edits_without_image_are_refused_before_calling(server, provider) -> None:
    src = hosted(server, fake_image(256, 256, "v"))
    err = await failure(provider, generation("gpt-image-1", "", kind=gen.GENERATION_KIND_VARIATION, image_url=src))
    assert err.code is ErrorCode.INVALID_REQUEST
    err = await failure(provider, generation("gpt-image-1", "x", kind=gen.GENERATION_KIND_EDIT))
    assert err.code is ErrorCode.INVALID_REQUEST and "input image" in err.message
    assert api_calls(server) == []


async def test_an_unreachable_input_image_is_the_clients_problem(server, provider) -> None:
    g = generation("gpt-image-1", "x", kind=gen.GENERATION_KIND_EDIT, image_url=f"{server.url}/_files/nothing.png")
    err = await failure(provider, g)
    assert err.code is ErrorCode.INVALID_REQUEST and not err.retryable


async def test_input_urls_on_private_hosts_are_refused_by_default(server) -> None:
    reset(server)
    p = OpenAIProvider.build(OpenAISettings(**{"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": f"{server.url}/v1", **FAST_RETRIES}))
    try:
        for url in (server.state.host_file(fake_image(64, 64, "internal")), "http://169.254.169.254/latest/meta-data",
                    "http://[::1]:9000/bucket/x.png"):
            err = await failure(p, generation("gpt-image-1", "x", kind=gen.GENERATION_KIND_EDIT, image_url=url))
            assert err.code is ErrorCode.INVALID_REQUEST and "public" in err.message
    finally:
        await p.close()
    assert api_calls(server) == []  # the API was never called


async def test_non_square_dall_e_2_edit_is_the_upstreams_error(server, provider) -> None:
    src = hosted(server, base64.b64decode(base64.b64encode(fake_image(300, 200, "wide"))))
    err = await failure(provider, generation("dall-e-2", "x", size="256x256", kind=gen.GENERATION_KIND_EDIT, image_url=src))
    assert err.code is ErrorCode.INVALID_REQUEST and "square" in err.message


# ---- through the real mesh ---------------------------------------------------------------


@pytest.fixture(scope="module")
def openai_pool(mesh):
    """The emulator and a worker process serving the openai pool (needs openai in ROUTING_PROVIDERS)."""
    require_route(mesh, "openai")
    srv = EmulatorServer("openai", free_port(), api_key=KEY).start()
    # EMULATED_INPUTS: the JSON edits below name images the emulator hosts on 127.0.0.1.
    instance = start_worker(mesh, "openai", OPENAI_API_KEY=KEY, OPENAI_BASE_URL=f"{srv.url}/v1", **EMULATED_INPUTS)
    yield srv
    mesh.stop(instance)
    srv.stop()


async def test_mesh_dall_e_3_and_a_refusal_through_the_edge(openai_pool, http) -> None:
    reset(openai_pool)
    r = await http.post("/v1/images/generations", json={
        "model": "dall-e-3", "prompt": "a lighthouse", "size": "1024x1792", "style": "natural", "response_format": "b64_json"})
    assert r.status_code == 200, r.text
    item = r.json()["data"][0]
    assert item["revised_prompt"] == "A detailed, carefully composed rendering of a lighthouse"
    assert opened(base64.b64decode(item["b64_json"])).size == (1024, 1792)
    assert received(openai_pool)[0]["fields"]["style"] == "natural"
    reset(openai_pool)
    r = await http.post("/v1/images/generations", json={"model": "dall-e-3", "prompt": "something forbidden"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_policy_violation", r.text
    assert len(api_calls(openai_pool)) == 1


async def test_edit_inputs_are_read_from_the_storage_service(mesh, server) -> None:
    """Stored inputs (object keys, as the edge stores uploads) reach the upstream's multipart."""
    reset(server)
    source = fake_image(1024, 1024, "stored-input")
    channel = grpc_channel(mesh.addr("storage"))
    try:
        stub = storage_service_pb2_grpc.StorageServiceStub(channel)

        async def parts():
            yield storage_pb.PutImageRequest(header=storage_pb.PutImageHeader(
                generation_id="gen_openai_edit_input", index=0, retention_class="days-7",
                output_format=gen.OUTPUT_FORMAT_PNG, width=1024, height=1024))
            yield storage_pb.PutImageRequest(chunk=source)

        stored = (await stub.PutImage(parts())).image
        p = OpenAIProvider.build(settings(server), storage=stub)
        try:
            g = generation("gpt-image-1", "add a hat", kind=gen.GENERATION_KIND_EDIT,
                           input_images=[gen.InputImage(object_key=stored.object_key, role="image")])
            result, _ = await run(p, g)
            assert len(result.images) == 1
            assert received(server)[0]["files"]["image"][0]["bytes"] == len(source)
            g = generation("gpt-image-1", "add a hat", kind=gen.GENERATION_KIND_EDIT,
                           input_images=[gen.InputImage(object_key="days-7/gen_missing_input/0.png", role="image")])
            err = await failure(p, g)
            assert err.code is ErrorCode.INVALID_REQUEST and "no longer stored" in err.message
        finally:
            await p.close()
    finally:
        await channel.close()


@pytest.fixture
def sdk(openai_pool, edge_url: str, api_key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{edge_url}/v1", api_key=api_key, max_retries=0, timeout=120)


async def test_mesh_gpt_image_2_at_a_free_size_through_the_sdk(openai_pool, sdk) -> None:
    reset(openai_pool)
    resp = await sdk.images.generate(model="gpt-image-2", prompt="a wide harbour", size="1280x720", quality="low",
                                     output_format="webp")
    assert resp.size == "1280x720" and resp.model_extra["model"] == "gpt-image-2"
    assert opened(base64.b64decode(resp.data[0].b64_json)).size == (1280, 720)
    assert resp.usage.output_tokens == 272 and resp.model_extra["perf"]["model_used"] == "gpt-image-2"
    assert_images_response(resp.model_dump(exclude_none=True))
    assert received(openai_pool)[0]["fields"]["size"] == "1280x720"


@pytest.mark.parametrize(("size", "words"), [("1000x1000", "multiples of 16"), ("3840x1024", "1:3 and 3:1"),
                                             ("3840x2176", "8,294,400 pixels"), ("4096x2160", "3840")])
async def test_mesh_gpt_image_2_sizes_outside_its_rule_are_400s_naming_size(openai_pool, sdk, size, words) -> None:
    reset(openai_pool)
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk.images.generate(model="gpt-image-2", prompt="x", size=size)
    err = exc.value.body
    assert (err["param"], err["type"], err["code"]) == ("size", "invalid_request_error", "invalid_request")
    assert words in err["message"] and size in err["message"]
    assert api_calls(openai_pool) == [], "refused before anything was queued or spent"


async def test_mesh_gpt_image_1_mini_through_the_sdk(openai_pool, sdk) -> None:
    reset(openai_pool)
    resp = await sdk.images.generate(model="gpt-image-1-mini", prompt="a kite", n=2, quality="low")
    assert len(resp.data) == 2 and resp.model_extra["model"] == "gpt-image-1-mini"
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk.images.edit(model="gpt-image-1-mini", prompt="x", input_fidelity="high",
                              image=("a.png", fake_image(64, 64, "mini"), "image/png"))
    assert exc.value.body["param"] == "input_fidelity"


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


async def test_mesh_json_edit_with_image_urls_and_a_mask(openai_pool, http) -> None:
    """OpenAI's JSON edits body: a data URL (checked and stored by the edge) and an http URL
    (read by the worker), in order, and a data URL mask; the upstream gets them as multipart."""
    reset(openai_pool)
    first = fake_image(1024, 1024, "json-first")
    second = hosted(openai_pool, fake_image(1024, 1024, "json-second", "JPEG"), "jpg", "image/jpeg")
    r = await http.post("/v1/images/edits", json={
        "model": "gpt-image-1.5", "prompt": "add a red kite", "input_fidelity": "high", "quality": "low",
        "images": [{"image_url": data_url(first)}, {"image_url": second}],
        "mask": {"image_url": data_url(mask_bytes(1024, 1024))}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_images_response(body)
    assert body["usage"]["input_tokens_details"]["image_tokens"] == 2 * 194
    sent = received(openai_pool)[0]
    assert sent["path"] == "/v1/images/edits" and sent["fields"]["input_fidelity"] == "high"
    assert [(p["content_type"], p["bytes"]) for p in sent["files"]["image[]"]][0] == ("image/png", len(first))
    assert sent["files"]["image[]"][1]["content_type"] == "image/jpeg" and len(sent["files"]["mask"]) == 1


async def test_mesh_json_edit_at_a_gpt_image_2_free_size(openai_pool, http) -> None:
    reset(openai_pool)
    r = await http.post("/v1/images/edits", json={
        "model": "gpt-image-2", "prompt": "dusk", "size": "1536x864",
        "images": [{"image_url": data_url(fake_image(1536, 864, "json-wide"))}]})
    assert r.status_code == 200, r.text
    assert r.json()["size"] == "1536x864" and received(openai_pool)[0]["fields"]["size"] == "1536x864"

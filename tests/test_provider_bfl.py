"""The bfl adapter against the BFL emulator over real HTTP (no Kafka)."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from google.protobuf.struct_pb2 import Struct

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from tests.emulators.harness import REFUSED_WORD
from tests.support.polling import wait_finished
from tests.support.provider_mesh import dispatch, fetch, finished, queued, served_models, start_worker, store, wait_for
from tests.support.provider_jobs import (
    emulator_fixtures,
    EMULATED_INPUTS, FAST_POLLS, FAST_RETRIES, Recorder, failure, generation, image_info, png,
)
from worker.providers.bfl import BflProvider, BflSettings

KEY = "bfl-test-key-5f2a"


emulator, control = emulator_fixtures("bfl", KEY)


def settings(url: str, key: str = KEY, **extra) -> BflSettings:
    values = {
        "BFL_API_KEY": key,
        "BFL_BASE_URL": url,
        **FAST_RETRIES, **EMULATED_INPUTS, **FAST_POLLS,
        **extra,
    }
    return BflSettings(**values)


@pytest.fixture
async def bfl(emulator, control):
    provider = BflProvider.build(settings(emulator.url))
    yield provider
    await provider.close()


@pytest.mark.parametrize(
    ("model", "endpoint", "width", "height"),
    [
        ("flux-1.1-pro", "flux-pro-1.1", 1024, 1024),
        ("flux-pro", "flux-pro", 1024, 768),
        ("flux-dev", "flux-dev", 768, 1024),
        ("flux-1.1-pro-ultra", "flux-pro-1.1-ultra", 1344, 768),
    ],
)
async def test_each_text_model_makes_the_requested_image(bfl, control, model, endpoint, width, height) -> None:
    rec = Recorder()
    result = await bfl.generate(generation(model, width=width, height=height), rec.progress)
    assert len(result.images) == 1
    image = result.images[0]
    assert image_info(image.data) == ("png", width, height)
    assert (image.width, image.height, image.output_format) == (width, height, gen.OUTPUT_FORMAT_PNG)
    [task] = control.get("/_emulator/bfl/tasks")["tasks"]
    assert task["model"] == endpoint
    assert task["body"]["prompt"] == "a lighthouse at dusk" and task["body"]["seed"] == 42
    assert rec.upstream_ids == [task["id"]]
    assert rec.percents[-1] == 100.0
    if endpoint == "flux-pro-1.1-ultra":
        assert task["body"]["aspect_ratio"] == "7:4" and "width" not in task["body"]
    else:
        assert (task["body"]["width"], task["body"]["height"]) == (width, height)


async def test_the_polling_url_is_polled_exactly(bfl, control) -> None:
    await bfl.generate(generation("flux-dev"), Recorder().progress)
    gets = control.calls("GET")
    assert gets and all(c["path"] == "/eu/v1/get_result" for c in gets), gets
    assert all(c["authorized"] for c in control.calls())


async def test_sizes_beyond_bfls_limits_are_asked_within_them_and_delivered_as_promised(bfl, control) -> None:
    result = await bfl.generate(generation("flux-1.1-pro", width=1536, height=1024), Recorder().progress)
    [task] = control.get("/_emulator/bfl/tasks")["tasks"]
    assert (task["body"]["width"], task["body"]["height"]) == (1440, 960)
    assert image_info(result.images[0].data)[1:] == (1536, 1024)
    control.reset()
    await bfl.generate(generation("flux-pro", width=1366, height=768), Recorder().progress)
    body = control.get("/_emulator/bfl/tasks")["tasks"][-1]["body"]
    assert (body["width"], body["height"]) == (1376, 768)


async def test_n_images_are_n_tasks_with_their_own_seeds(bfl, control) -> None:
    rec = Recorder()
    result = await bfl.generate(generation("flux-dev", n=3), rec.progress)
    assert len(result.images) == 3
    tasks = control.get("/_emulator/bfl/tasks")["tasks"]
    assert sorted(t["body"]["seed"] for t in tasks) == [42, 43, 44]
    assert len({img.data for img in result.images}) == 3
    assert sorted(rec.upstream_ids[-1].split(",")) == sorted(t["id"] for t in tasks)


async def test_progress_is_reported_while_pending(bfl, control) -> None:
    control.faults(job_seconds=0.6)
    rec = Recorder()
    await bfl.generate(generation("flux-dev"), rec.progress)
    assert len(rec.percents) >= 3
    assert rec.percents == sorted(rec.percents) and any(0 < p < 100 for p in rec.percents) and rec.percents[-1] == 100


async def test_kontext_edits_an_image_given_by_url(bfl, control, emulator) -> None:
    url = emulator.state.host_file(png(300, 200))
    g = generation("flux-kontext-pro", "make it blue", width=1344, height=768, kind=gen.GENERATION_KIND_EDIT,
                   input_images=[gen.InputImage(url=url, role="image")])
    result = await bfl.generate(g, Recorder().progress)
    body = control.get("/_emulator/bfl/tasks")["tasks"][0]["body"]
    assert body["input_image"] == url and body["aspect_ratio"] == "7:4" and body["safety_tolerance"] <= 2
    assert image_info(result.images[0].data) == ("png", 1344, 768)


async def test_kontext_sends_other_images_as_base64(bfl, control) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(png(64, 64)).decode()
    g = generation("flux-kontext-pro", "add a hat", image_url=data_url)
    await bfl.generate(g, Recorder().progress)
    body = control.get("/_emulator/bfl/tasks")["tasks"][0]["body"]
    assert body["input_image"].startswith("<base64 ")


async def test_kontext_without_an_image_generates_from_the_prompt(bfl, control) -> None:
    result = await bfl.generate(generation("flux-kontext-pro", "a red fox"), Recorder().progress)
    assert "input_image" not in control.get("/_emulator/bfl/tasks")["tasks"][0]["body"]
    assert image_info(result.images[0].data) == ("png", 1024, 1024)


def options(**values) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct


@pytest.mark.parametrize("model", ["flux-2-pro", "flux-2-max", "flux-2-flex", "flux-2-klein-4b", "flux-2-klein-9b"])
async def test_each_flux_2_model_makes_any_size_in_webp(bfl, control, model) -> None:
    # The emulator refuses unknown fields (Flux2Params), so the body is exactly what BFL takes.
    result = await bfl.generate(
        generation(model, width=1920, height=1088, output_format=gen.OUTPUT_FORMAT_WEBP), Recorder().progress
    )
    assert image_info(result.images[0].data) == ("webp", 1920, 1088)
    [task] = control.get("/_emulator/bfl/tasks")["tasks"]
    assert task["model"] == model
    assert (task["body"]["width"], task["body"]["height"], task["body"]["output_format"]) == (1920, 1088, "webp")
    assert task["body"].get("guidance") == (5.0 if model == "flux-2-flex" else None)


async def test_flux_2_takes_eight_references_in_the_clients_order(bfl, control, emulator) -> None:
    urls = [emulator.state.host_file(png(96 + 16 * i, 64)) for i in range(7)]
    data_url = "data:image/png;base64," + base64.b64encode(png(32, 32)).decode()
    refs = [gen.InputImage(url=u, role="image") for u in urls] + [gen.InputImage(url=data_url, role="image")]
    g = generation("flux-2-max", "the cat from image 1 in the room of image 2", width=1024, height=768,
                   kind=gen.GENERATION_KIND_EDIT, input_images=refs,
                   provider_options=options(safety_tolerance=5))
    result = await bfl.generate(g, Recorder().progress)
    body = control.get("/_emulator/bfl/tasks")["tasks"][0]["body"]
    assert [body["input_image"]] + [body[f"input_image_{i}"] for i in range(2, 8)] == urls
    assert body["input_image_8"].startswith("<base64 ")
    assert body["safety_tolerance"] == 2  # the client's 5 is more than BFL allows with images
    assert image_info(result.images[0].data) == ("png", 1024, 768)


async def test_more_references_than_klein_takes_are_refused_before_any_call(bfl, control, emulator) -> None:
    refs = [gen.InputImage(url=emulator.state.host_file(png()), role="image") for _ in range(5)]
    err = await failure(bfl, generation("flux-2-klein-4b", kind=gen.GENERATION_KIND_EDIT, input_images=refs))
    assert err.code is ErrorCode.INVALID_REQUEST and "at most 4" in err.message and not err.retryable
    assert control.calls("POST") == []


async def test_flux_2_flex_takes_the_clients_steps_and_guidance(bfl, control) -> None:
    g = generation("flux-2-flex", provider_options=options(steps=12, guidance=7.5, prompt_upsampling=True))
    await bfl.generate(g, Recorder().progress)
    body = control.get("/_emulator/bfl/tasks")["tasks"][0]["body"]
    assert (body["steps"], body["guidance"], body["prompt_upsampling"]) == (12, 7.5, True)


async def test_a_transparent_background_comes_back_with_alpha(bfl, control) -> None:
    from io import BytesIO

    from PIL import Image

    result = await bfl.generate(generation("flux-2-klein-9b", background="transparent"), Recorder().progress)
    body = control.get("/_emulator/bfl/tasks")["tasks"][0]["body"]
    assert (body["transparent_bg"], body["output_format"]) == (True, "png")
    with Image.open(BytesIO(result.images[0].data)) as image:
        assert image.mode == "RGBA" and image.getpixel((0, 0))[3] == 0


async def test_ultra_sends_the_input_image_as_a_base64_image_prompt(bfl, control, emulator) -> None:
    url = emulator.state.host_file(png(300, 200))
    g = generation("flux-1.1-pro-ultra", width=2752, height=1536, kind=gen.GENERATION_KIND_EDIT,
                   input_images=[gen.InputImage(url=url, role="image")],
                   provider_options=options(raw=True, image_prompt_strength=0.3))
    result = await bfl.generate(g, Recorder().progress)
    body = control.get("/_emulator/bfl/tasks")["tasks"][0]["body"]
    assert body["image_prompt"].startswith("<base64 ") and "input_image" not in body
    assert (body["raw"], body["image_prompt_strength"], body["aspect_ratio"]) == (True, 0.3, "43:24")
    assert image_info(result.images[0].data) == ("png", 2752, 1536)


async def test_kontext_max_takes_four_references(bfl, control, emulator) -> None:
    refs = [gen.InputImage(url=emulator.state.host_file(png(64 * (i + 1), 64)), role="image") for i in range(4)]
    g = generation("flux-kontext-max", "all four in one frame", kind=gen.GENERATION_KIND_EDIT, input_images=refs)
    await bfl.generate(g, Recorder().progress)
    [task] = control.get("/_emulator/bfl/tasks")["tasks"]
    assert task["model"] == "flux-kontext-max"
    assert [task["body"][k] for k in ("input_image", "input_image_2", "input_image_3", "input_image_4")] == [
        r.url for r in refs
    ]


async def test_an_edit_on_a_model_without_image_input_is_refused_before_any_call(bfl, control) -> None:
    g = generation("flux-dev", kind=gen.GENERATION_KIND_EDIT, image_url="https://example.com/a.png")
    err = await failure(bfl, g)
    assert err.code is ErrorCode.INVALID_REQUEST and not err.retryable
    assert control.calls() == []


async def test_a_bad_input_image_is_the_clients_error_before_any_upstream_call(bfl, control) -> None:
    g = generation("flux-kontext-pro", "add a hat", image_url="data:image/png;base64,AAAA")
    err = await failure(bfl, g)
    assert err.code is ErrorCode.INVALID_REQUEST and not err.retryable
    assert "not an image" in err.message
    assert len(control.calls("POST")) == 0  # probed here: no upstream call (nor charge) for garbage


@pytest.mark.parametrize(
    ("prompt", "status", "code", "retryable"),
    [
        (f"a {REFUSED_WORD} scene", "Request Moderated", ErrorCode.CONTENT_POLICY_VIOLATION, False),
        ("moderated-output please", "Content Moderated", ErrorCode.CONTENT_POLICY_VIOLATION, False),
        ("upstream-error please", "Error", ErrorCode.PROVIDER_ERROR, True),
        ("expire-task please", "Task not found", ErrorCode.PROVIDER_ERROR, True),
    ],
)
async def test_every_final_poll_state_has_its_gateway_code(bfl, control, prompt, status, code, retryable) -> None:
    err = await failure(bfl, generation("flux-1.1-pro", prompt))
    assert (err.code, err.retryable) == (code, retryable)
    if code is ErrorCode.CONTENT_POLICY_VIOLATION:
        assert status in err.message
    assert len(control.calls("POST")) == 1, "a refusal or a failed job is never resubmitted here"


async def test_negative_prompts_are_refused_not_dropped(bfl, control) -> None:
    err = await failure(bfl, generation("flux-1.1-pro", negative_prompt="blur"))
    assert err.code is ErrorCode.INVALID_REQUEST and "negative_prompt" in err.message
    assert control.calls() == []


async def test_a_wrong_key_is_a_provider_auth_error_that_never_shows_the_key(emulator, control) -> None:
    provider = BflProvider.build(settings(emulator.url, key="bfl-wrong-key-9c1d"))
    try:
        err = await failure(provider, generation("flux-dev"))
    finally:
        await provider.close()
    assert err.code is ErrorCode.PROVIDER_AUTH and err.retryable
    assert "bfl-wrong-key-9c1d" not in err.message
    assert len(control.calls()) == 1


async def test_5xx_then_success(bfl, control) -> None:
    control.faults(fail_first=2, fail_status=502)
    result = await bfl.generate(generation("flux-dev"), Recorder().progress)
    assert len(result.images) == 1
    assert len(control.calls("POST")) == 3


async def test_429_retry_after_is_honoured(bfl, control) -> None:
    control.faults(fail_first=1, fail_status=429, retry_after=0.5)
    started = time.monotonic()
    await bfl.generate(generation("flux-dev"), Recorder().progress)
    assert time.monotonic() - started >= 0.5
    assert len(control.calls("POST")) == 2


async def test_the_active_task_limit_is_waited_out(emulator, control) -> None:
    """25 jobs at once against BFL's 24 active tasks: the 429s are retried until slots free.
    Each job runs 1.5 s upstream, so all 25 submits land while the first 24 are active even
    on a loaded machine (its 8 connections send them a few at a time); the retry budget is
    10 s here (not the fixture's 3 s), so the 25th outlasts a slow first job on a busy machine."""
    control.faults(job_seconds=1.5)
    bfl = BflProvider.build(settings(emulator.url, WORKER_RETRY_BUDGET_SECONDS="10"))
    try:
        results = await asyncio.gather(
            *(bfl.generate(generation("flux-dev", f"job {i}"), Recorder().progress) for i in range(25))
        )
    finally:
        await bfl.close()
    assert all(len(r.images) == 1 for r in results)
    assert len(control.calls("POST")) > 25


async def test_a_down_upstream_fails_retryably_within_the_budget(bfl, control) -> None:
    control.faults(down=True)
    started = time.monotonic()
    err = await failure(bfl, generation("flux-dev"))
    assert (err.code, err.retryable) == (ErrorCode.PROVIDER_UNAVAILABLE, True)
    assert time.monotonic() - started < 3 + 2
    assert len(control.calls()) >= 2


async def test_a_job_past_its_timeout_is_a_retryable_timeout(emulator, control) -> None:
    control.faults(job_seconds=30)
    provider = BflProvider.build(settings(emulator.url, WORKER_JOB_TIMEOUT_SECONDS=0.4))
    try:
        started = time.monotonic()
        err = await failure(provider, generation("flux-dev"))
    finally:
        await provider.close()
    assert (err.code, err.retryable) == (ErrorCode.TIMEOUT, True)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("output_format", "asked", "compression", "delivered"),
    [
        (gen.OUTPUT_FORMAT_WEBP, "png", None, "webp"),
        (gen.OUTPUT_FORMAT_JPEG, "jpeg", None, "jpeg"),
        (gen.OUTPUT_FORMAT_JPEG, "jpeg", 30, "jpeg"),
    ],
)
async def test_output_formats(bfl, control, output_format, asked, compression, delivered) -> None:
    extra = {"output_compression": compression} if compression is not None else {}
    result = await bfl.generate(generation("flux-dev", output_format=output_format, **extra), Recorder().progress)
    assert control.get("/_emulator/bfl/tasks")["tasks"][0]["body"]["output_format"] == asked
    assert image_info(result.images[0].data)[0] == delivered
    assert result.images[0].output_format == output_format


async def test_a_model_bfl_does_not_serve_goes_to_the_next_route(bfl, control) -> None:
    err = await failure(bfl, generation("dall-e-3"))
    assert err.code is ErrorCode.PROVIDER_ERROR and err.retryable


# ---- through the real mesh: Kafka, storage, status and a worker process for bfl ----

@pytest.fixture(scope="module")
def bfl_worker(mesh, emulator):
    instance = start_worker(mesh, "bfl", BFL_API_KEY=KEY, BFL_BASE_URL=emulator.url)
    yield instance
    mesh.stop(instance)


async def test_mesh_kontext_edits_a_stored_image(mesh, bfl_worker, control) -> None:
    g = queued(generation("flux-kontext-pro", "make it blue", width=1024, height=768, kind=gen.GENERATION_KIND_EDIT), "bfl")
    key = await store(mesh, g.id, png(200, 150), index=900)
    g.params.input_images.add(object_key=key, role="image", mime_type="image/png")
    await dispatch(mesh, g)
    done = await finished(mesh, g.id)
    assert done.state == gen.GENERATION_STATE_SUCCEEDED, done
    [task] = control.get("/_emulator/bfl/tasks")["tasks"]
    assert task["body"]["input_image"].startswith("<base64 ") and task["body"]["aspect_ratio"] == "4:3"
    assert [(a.provider, a.upstream_id) for a in done.attempts] == [("bfl", task["id"])]
    [ref] = done.images
    assert image_info(await fetch(mesh, ref.object_key)) == ("png", 1024, 768)


async def test_mesh_a_down_bfl_hands_the_generation_back_for_the_next_route(mesh, bfl_worker, control) -> None:
    control.faults(down=True)
    g = queued(generation("flux-dev", "fallback please"), "bfl")
    await dispatch(mesh, g, routes=("bfl", "replicate"))
    back = await wait_for(mesh, g.id, lambda s: s.attempts and s.attempts[0].error.code)
    assert back.state == gen.GENERATION_STATE_QUEUED, back
    assert (back.attempts[0].provider, back.attempts[0].error.code, back.attempts[0].error.retryable) == ("bfl", "provider_unavailable", True)


async def test_mesh_a_refusal_is_final_even_with_routes_left(mesh, bfl_worker, control) -> None:
    g = queued(generation("flux-dev", f"a {REFUSED_WORD} thing"), "bfl")
    await dispatch(mesh, g, routes=("bfl", "replicate"))
    done = await finished(mesh, g.id)
    assert done.state == gen.GENERATION_STATE_FAILED and done.error.code == "content_policy_violation", done
    assert "Request Moderated" in done.error.message and len(control.calls("POST")) == 1


async def test_mesh_through_the_edge(mesh, bfl_worker, control, http, edge_url, api_key) -> None:
    if "flux-1.1-pro" not in await served_models(edge_url, api_key):
        pytest.skip("routing does not serve bfl yet: ROUTING_PROVIDERS must include bfl")
    r = await http.post("/api/v2/generate", json={"model": "flux-1.1-pro", "prompt": "a lighthouse", "size": "1024x768"})
    assert r.status_code == 200, r.text
    body = await wait_finished(http, r.json()["id"])
    assert body["status"] == "completed", body
    assert control.get("/_emulator/bfl/tasks")["tasks"][0]["model"] == "flux-pro-1.1"


async def test_mesh_flux_2_edits_with_three_references_through_the_openai_sdk(
    mesh, bfl_worker, control, edge_url, api_key
) -> None:
    import openai

    if "flux-2-pro" not in await served_models(edge_url, api_key):
        pytest.fail("routing does not serve bfl: ROUTING_PROVIDERS must include bfl")
    client = openai.AsyncOpenAI(base_url=f"{edge_url}/v1", api_key=api_key, max_retries=0, timeout=120)
    images = [(f"ref{i}.png", png(64 + 32 * i, 64, (40 * i, 90, 200)), "image/png") for i in range(3)]
    resp = await client.images.edit(
        model="flux-2-pro", image=images, prompt="the three objects on one table", size="1536x1024",
        response_format="b64_json",
    )
    [task] = control.get("/_emulator/bfl/tasks")["tasks"]
    assert task["model"] == "flux-2-pro" and (task["body"]["width"], task["body"]["height"]) == (1536, 1024)
    assert all(task["body"][k].startswith("<base64 ") for k in ("input_image", "input_image_2", "input_image_3"))
    assert "input_image_4" not in task["body"]
    assert image_info(base64.b64decode(resp.data[0].b64_json)) == ("png", 1536, 1024)
    # Priced as BFL prices it: 3c + 0.5 further MP x 1.5c + 3 input MP x 1.5c = 8.25c.
    assert (resp.model_extra["cost_usd"], resp.model_extra["tokens_spent"]) == (0.0825, 9)
    # A free size in multiples of 16 generates as asked; one outside FLUX.2's rule is a 400 naming size.
    free = await client.images.generate(model="flux-2-klein-4b", prompt="a fox", size="1920x1088",
                                        response_format="b64_json")
    assert image_info(base64.b64decode(free.data[0].b64_json))[1:] == (1920, 1088)
    with pytest.raises(openai.BadRequestError) as exc:
        await client.images.generate(model="flux-2-klein-4b", prompt="a fox", size="2560x2048")
    assert exc.value.body["param"] == "size" and "4,194,304" in exc.value.body["message"]

"""The bfl adapter against the BFL emulator over real HTTP (no Kafka)."""

from __future__ import annotations

import asyncio
import time

import pytest

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
    import base64

    data_url = "data:image/png;base64," + base64.b64encode(png(64, 64)).decode()
    g = generation("flux-kontext-pro", "add a hat", image_url=data_url)
    await bfl.generate(g, Recorder().progress)
    body = control.get("/_emulator/bfl/tasks")["tasks"][0]["body"]
    assert body["input_image"].startswith("<base64 ")


async def test_kontext_without_an_image_generates_from_the_prompt(bfl, control) -> None:
    result = await bfl.generate(generation("flux-kontext-pro", "a red fox"), Recorder().progress)
    assert "input_image" not in control.get("/_emulator/bfl/tasks")["tasks"][0]["body"]
    assert image_info(result.images[0].data) == ("png", 1024, 1024)


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

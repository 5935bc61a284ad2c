"""The fal adapter against the fal queue emulator over real HTTP (no Kafka)."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from tests.emulators.harness import REFUSED_WORD
from tests.support.provider_mesh import cancel, dispatch, fetch, finished, queued, start_worker, wait_for
from tests.support.provider_jobs import (
    emulator_fixtures,
    EMULATED_INPUTS, FAST_POLLS, FAST_RETRIES, Control, Recorder, failure, generation, image_info, png,
)
from worker.providers.fal import FalProvider, FalSettings

KEY = "fal-key-1c2d:secret-99"


emulator, control = emulator_fixtures("fal", KEY)


def settings(url: str, key: str = KEY, **extra) -> FalSettings:
    return FalSettings(**{
        "FAL_KEY": key,
        "FAL_BASE_URL": url,
        **FAST_RETRIES, **EMULATED_INPUTS, **FAST_POLLS,
        **extra,
    })


@pytest.fixture
async def fal(emulator, control):
    provider = FalProvider.build(settings(emulator.url))
    yield provider
    await provider.close()


def submitted(control: Control) -> list[dict]:
    return control.get("/_emulator/fal/requests")["requests"]


@pytest.mark.parametrize(
    ("model", "app", "endpoint"),
    [
        ("flux-1.1-pro", "fal-ai/flux-pro", "v1.1"),
        ("flux-pro", "fal-ai/flux-pro", "new"),
        ("flux-dev", "fal-ai/flux", "dev"),
        ("stable-diffusion-xl", "fal-ai/fast-sdxl", ""),
    ],
)
async def test_each_model_through_the_queue(fal, control, model, app, endpoint) -> None:
    control.faults(job_seconds=0.5)
    rec = Recorder()
    result = await fal.generate(generation(model, width=1152, height=896, n=2), rec.progress)
    [req] = submitted(control)
    assert (req["app"], req["endpoint"]) == (app, endpoint)
    assert req["input"]["num_images"] == 2 and req["input"]["image_size"] == {"width": 1152, "height": 896}
    assert [image_info(i.data) for i in result.images] == [("png", 1152, 896)] * 2
    assert rec.upstream_ids == [req["id"]]
    # Status and result under {owner}/{alias} only: the URLs the submit returned.
    gets = control.calls("GET", f"/{app}/requests/{req['id']}")
    assert gets and all(c["path"] in (f"/{app}/requests/{req['id']}/status", f"/{app}/requests/{req['id']}") for c in gets)
    assert rec.percents == sorted(rec.percents) and rec.percents[-1] == 100 and len(rec.percents) >= 2


async def test_kontext_edits_by_url_and_generates_without_an_image(fal, control, emulator) -> None:
    url = emulator.state.host_file(png(100, 100))
    g = generation("flux-kontext-pro", "add snow", width=768, height=1024, kind=gen.GENERATION_KIND_EDIT,
                   input_images=[gen.InputImage(url=url)])
    result = await fal.generate(g, Recorder().progress)
    req = submitted(control)[0]
    assert req["endpoint"] == "kontext" and req["input"]["image_url"] == url and req["input"]["aspect_ratio"] == "3:4"
    assert image_info(result.images[0].data)[1:] == (768, 1024)
    await fal.generate(generation("flux-kontext-pro", "a fox"), Recorder().progress)
    assert submitted(control)[1]["endpoint"] == "kontext/text-to-image"


async def test_kontext_sends_inline_images_as_data_urls(fal, control) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(png(16, 16)).decode()
    await fal.generate(generation("flux-kontext-pro", "add snow", image_url=data_url), Recorder().progress)
    assert submitted(control)[0]["input"]["image_url"].startswith("<data url")


async def test_an_input_image_fal_cannot_fetch_fails_as_the_clients_error(fal, control, emulator) -> None:
    g = generation("flux-kontext-pro", "add snow", image_url=f"{emulator.url}/_files/missing.png")
    err = await failure(fal, g)
    assert err.code is ErrorCode.INVALID_REQUEST and "image_url" in err.message


async def test_flagged_images_are_a_content_policy_refusal(fal, control) -> None:
    err = await failure(fal, generation("flux-dev", f"{REFUSED_WORD} scene"))
    assert err.code is ErrorCode.CONTENT_POLICY_VIOLATION and not err.retryable
    assert len(control.calls("POST")) == 1


async def test_a_failed_request_shows_on_its_result(fal, control) -> None:
    err = await failure(fal, generation("flux-dev", "upstream-error"))
    assert err.code is ErrorCode.PROVIDER_ERROR and err.retryable
    [req] = submitted(control)
    assert len(control.calls("GET", f"/fal-ai/flux/requests/{req['id']}")) >= 2
    results = [c for c in control.calls("GET") if c["path"] == f"/fal-ai/flux/requests/{req['id']}"]
    assert len(results) == 1, "a model failure (500 with x-fal-request-id) is not retried"


async def test_input_the_schema_refuses_is_an_invalid_request(fal, control) -> None:
    err = await failure(fal, generation("flux-dev", n=6))
    assert err.code is ErrorCode.INVALID_REQUEST and "num_images" in err.message
    assert len(control.calls("POST")) == 1


async def test_a_wrong_key(emulator, control) -> None:
    provider = FalProvider.build(settings(emulator.url, key="fal-wrong:key-0f"))
    try:
        err = await failure(provider, generation("flux-dev"))
    finally:
        await provider.close()
    assert err.code is ErrorCode.PROVIDER_AUTH and "fal-wrong:key-0f" not in err.message


async def test_ingress_failures_are_retried_everywhere(fal, control) -> None:
    control.faults(fail_first=3, fail_status=503)
    result = await fal.generate(generation("flux-dev"), Recorder().progress)
    assert len(result.images) == 1 and len(control.calls("POST")) == 4


async def test_429_on_the_result_is_retried(fal, control) -> None:
    control.faults(job_seconds=0.3)
    rec = Recorder()
    job = asyncio.create_task(fal.generate(generation("flux-dev"), rec.progress))
    while not rec.percents:
        await asyncio.sleep(0.01)
    control.faults(fail_first=1, fail_status=429, retry_after=0.2)
    result = await job
    assert len(result.images) == 1


async def test_a_down_queue(fal, control) -> None:
    control.faults(down=True)
    started = time.monotonic()
    err = await failure(fal, generation("flux-dev"))
    assert (err.code, err.retryable) == (ErrorCode.PROVIDER_UNAVAILABLE, True) and time.monotonic() - started < 5


async def test_cancel_while_queued_reaches_fal(fal, control) -> None:
    control.faults(job_seconds=30)
    rec = Recorder()
    job = asyncio.create_task(fal.generate(generation("flux-dev"), rec.progress))
    while not rec.upstream_ids:
        await asyncio.sleep(0.01)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await fal.cancel(rec.upstream_ids[0])
    assert [c["path"] for c in control.calls("PUT")] == [f"/fal-ai/flux/requests/{rec.upstream_ids[0]}/cancel"]
    assert submitted(control)[0]["cancelled"]


async def test_a_timed_out_request_is_cancelled(emulator, control) -> None:
    control.faults(job_seconds=30)
    provider = FalProvider.build(settings(emulator.url, WORKER_JOB_TIMEOUT_SECONDS=0.4))
    try:
        err = await failure(provider, generation("flux-dev"))
    finally:
        await provider.close()
    assert (err.code, err.retryable) == (ErrorCode.TIMEOUT, True)
    assert submitted(control)[0]["cancelled"]


@pytest.mark.parametrize(("fmt", "asked", "got"), [(gen.OUTPUT_FORMAT_JPEG, "jpeg", "jpeg"), (gen.OUTPUT_FORMAT_WEBP, "png", "webp")])
async def test_output_formats(fal, control, fmt, asked, got) -> None:
    result = await fal.generate(generation("flux-1.1-pro", output_format=fmt), Recorder().progress)
    assert submitted(control)[0]["input"]["output_format"] == asked
    assert image_info(result.images[0].data)[0] == got


# ---- through the real mesh: Kafka, storage, status and a worker process for fal ----

@pytest.fixture(scope="module")
def fal_worker(mesh, emulator):
    instance = start_worker(mesh, "fal", FAL_KEY=KEY, FAL_BASE_URL=emulator.url)
    yield instance
    mesh.stop(instance)


async def test_mesh_sdxl_with_a_negative_prompt(mesh, fal_worker, control) -> None:
    g = queued(generation("stable-diffusion-xl", "a bowl of fruit", width=896, height=1152, n=2, negative_prompt="blur",
                          output_format=gen.OUTPUT_FORMAT_WEBP), "fal")
    await dispatch(mesh, g)
    done = await finished(mesh, g.id)
    assert done.state == gen.GENERATION_STATE_SUCCEEDED, done
    [req] = submitted(control)
    assert req["input"]["negative_prompt"] == "blur" and done.attempts[0].upstream_id == req["id"]
    assert [image_info(await fetch(mesh, ref.object_key)) for ref in done.images] == [("webp", 896, 1152)] * 2


async def test_mesh_a_flagged_image_fails_without_a_second_route(mesh, fal_worker, control) -> None:
    g = queued(generation("flux-dev", f"{REFUSED_WORD} thing"), "fal")
    g.attempt = 2
    await dispatch(mesh, g, routes=("bfl", "fal"))
    done = await finished(mesh, g.id)
    assert done.state == gen.GENERATION_STATE_FAILED and done.error.code == "content_policy_violation", done
    assert done.error.provider == "fal"


async def test_mesh_a_cancel_reaches_the_queue(mesh, fal_worker, control) -> None:
    control.faults(job_seconds=60)
    g = queued(generation("flux-dev", "slow"), "fal")
    await dispatch(mesh, g)
    running = await wait_for(mesh, g.id, lambda s: s.attempts and s.attempts[0].upstream_id)
    await cancel(mesh, g.id)
    for _ in range(100):
        if submitted(control)[0]["cancelled"]:
            break
        await asyncio.sleep(0.1)
    [req] = submitted(control)
    assert req["cancelled"] and req["id"] == running.attempts[0].upstream_id

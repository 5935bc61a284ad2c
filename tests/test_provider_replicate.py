"""The replicate adapter against the Replicate emulator over real HTTP (no Kafka)."""

from __future__ import annotations

import asyncio
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
from worker.providers import ProviderError
from worker.providers.replicate import MODELS, ReplicateProvider, ReplicateSettings

TOKEN = "r8_test_token_3b7e"


emulator, control = emulator_fixtures("replicate", TOKEN)


def settings(url: str, token: str = TOKEN, **extra) -> ReplicateSettings:
    return ReplicateSettings(**{
        "REPLICATE_API_TOKEN": token,
        "REPLICATE_BASE_URL": f"{url}/v1",
        **FAST_RETRIES, **EMULATED_INPUTS, **FAST_POLLS,
        **extra,
    })


@pytest.fixture
async def replicate(emulator, control):
    provider = ReplicateProvider.build(settings(emulator.url))
    yield provider
    await provider.close()


@pytest.fixture
async def polling(emulator, control):
    """Without Prefer: wait, so every prediction is polled."""
    provider = ReplicateProvider.build(settings(emulator.url, REPLICATE_PREFER_WAIT_SECONDS=0))
    yield provider
    await provider.close()


def predictions(control: Control) -> list[dict]:
    return control.get("/_emulator/replicate/predictions")["predictions"]


async def test_flux_1_1_pro_answers_within_prefer_wait(replicate, control) -> None:
    rec = Recorder()
    result = await replicate.generate(generation("flux-1.1-pro", width=1024, height=768), rec.progress)
    assert image_info(result.images[0].data) == ("png", 1024, 768)
    [p] = predictions(control)
    assert p["model"] == "black-forest-labs/flux-1.1-pro" and p["prefer"] == "wait=30"
    assert p["input"] == {"prompt": "a lighthouse at dusk", "seed": 42, "output_format": "png", "aspect_ratio": "custom",
                          "width": 1024, "height": 768}
    assert control.calls("GET", "/v1/predictions") == []  # the create call carried the result
    assert rec.upstream_ids == [p["id"]] and rec.percents[-1] == 100


async def test_flux_dev_makes_n_images_in_one_prediction_at_the_nearest_ratio(replicate, control) -> None:
    result = await replicate.generate(generation("flux-dev", width=1024, height=768, n=3), Recorder().progress)
    [p] = predictions(control)
    assert p["input"]["num_outputs"] == 3 and p["input"]["aspect_ratio"] == "4:3"
    assert [image_info(i.data) for i in result.images] == [("png", 1024, 768)] * 3  # 1184x896 resized as promised
    assert len({i.data for i in result.images}) == 3


async def test_single_output_models_run_one_prediction_per_image(replicate, control) -> None:
    rec = Recorder()
    result = await replicate.generate(generation("flux-pro", width=1366, height=768, n=2), rec.progress)
    ps = predictions(control)
    assert len(ps) == 2 and sorted(p["input"]["seed"] for p in ps) == [42, 43]
    assert all((p["input"]["width"], p["input"]["height"]) == (1376, 768) for p in ps)
    assert [image_info(i.data)[1:] for i in result.images] == [(1366, 768)] * 2
    assert sorted(rec.upstream_ids[-1].split(",")) == sorted(p["id"] for p in ps)


async def test_kontext_edits_an_image_by_url(replicate, control, emulator) -> None:
    url = emulator.state.host_file(png(120, 90))
    g = generation("flux-kontext-pro", "make it night", width=1344, height=768, kind=gen.GENERATION_KIND_EDIT,
                   input_images=[gen.InputImage(url=url)])
    result = await replicate.generate(g, Recorder().progress)
    [p] = predictions(control)
    assert p["input"]["input_image"] == url and p["input"]["aspect_ratio"] == "16:9" and p["input"]["safety_tolerance"] == 2
    assert image_info(result.images[0].data)[1:] == (1344, 768)


async def test_sdxl_is_a_versioned_community_model_with_negative_prompts(replicate, control) -> None:
    result = await replicate.generate(generation("stable-diffusion-xl", width=1152, height=896, n=2, negative_prompt="blur"),
                                      Recorder().progress)
    [p] = predictions(control)
    assert p["model"] == "stability-ai/sdxl" and p["version"].startswith("7762fd07")
    assert p["input"]["negative_prompt"] == "blur" and p["input"]["num_outputs"] == 2
    assert [image_info(i.data) for i in result.images] == [("png", 1152, 896)] * 2
    assert control.calls("POST")[0]["path"] == "/v1/predictions"


async def test_a_slow_prediction_is_polled_with_progress_from_its_logs(polling, control) -> None:
    control.faults(job_seconds=0.8)
    rec = Recorder()
    await polling.generate(generation("flux-dev"), rec.progress)
    [p] = predictions(control)
    assert p["prefer"] == ""
    gets = control.calls("GET", "/v1/predictions")
    assert len(gets) >= 3 and all(c["path"] == f"/v1/predictions/{p['id']}" for c in gets)
    assert len(rec.percents) >= 3 and rec.percents == sorted(rec.percents) and any(0 < p < 100 for p in rec.percents)


async def test_prefer_wait_shorter_than_the_job_falls_back_to_polling(emulator, control) -> None:
    control.faults(job_seconds=1.5)
    provider = ReplicateProvider.build(settings(emulator.url, REPLICATE_PREFER_WAIT_SECONDS=1))
    try:
        result = await provider.generate(generation("flux-1.1-pro"), Recorder().progress)
    finally:
        await provider.close()
    assert len(result.images) == 1
    assert predictions(control)[0]["prefer"] == "wait=1" and control.calls("GET", "/v1/predictions")


@pytest.mark.parametrize(
    ("prompt", "code", "retryable"),
    [(f"{REFUSED_WORD} thing", ErrorCode.CONTENT_POLICY_VIOLATION, False), ("upstream-error", ErrorCode.PROVIDER_ERROR, True)],
)
async def test_failed_predictions(replicate, control, prompt, code, retryable) -> None:
    err = await failure(replicate, generation("flux-1.1-pro", prompt))
    assert (err.code, err.retryable) == (code, retryable)
    assert len(control.calls("POST")) == 1


async def test_input_validation_errors_are_invalid_requests(replicate, control) -> None:
    with pytest.raises(ProviderError) as exc:
        await replicate.submit((MODELS["flux-dev"], {"prompt": "x", "num_outputs": 9}))
    assert exc.value.code is ErrorCode.INVALID_REQUEST and "num_outputs" in exc.value.message
    assert len(control.calls("POST")) == 1


async def test_an_unknown_sdxl_version_is_the_routes_problem(emulator, control) -> None:
    provider = ReplicateProvider.build(settings(emulator.url, REPLICATE_SDXL_VERSION="0" * 64))
    try:
        err = await failure(provider, generation("stable-diffusion-xl", width=1152, height=896))
    finally:
        await provider.close()
    assert err.code is ErrorCode.PROVIDER_ERROR and err.retryable


async def test_negative_prompts_on_flux_are_refused_before_any_call(replicate, control) -> None:
    err = await failure(replicate, generation("flux-dev", negative_prompt="x"))
    assert err.code is ErrorCode.INVALID_REQUEST and control.calls() == []


async def test_a_wrong_token(emulator, control) -> None:
    provider = ReplicateProvider.build(settings(emulator.url, token="r8_wrong_token_55aa"))
    try:
        err = await failure(provider, generation("flux-dev"))
    finally:
        await provider.close()
    assert err.code is ErrorCode.PROVIDER_AUTH and "r8_wrong_token_55aa" not in err.message


async def test_429_retry_after_then_success(replicate, control) -> None:
    control.faults(fail_first=1, fail_status=429, retry_after=0.4)
    started = time.monotonic()
    await replicate.generate(generation("flux-dev"), Recorder().progress)
    assert time.monotonic() - started >= 0.4 and len(control.calls("POST")) == 2


async def test_5xx_then_success_and_down(replicate, control) -> None:
    control.faults(fail_first=2, fail_status=500)
    await replicate.generate(generation("flux-dev"), Recorder().progress)
    assert len(control.calls("POST")) == 3
    control.faults(down=True)
    err = await failure(replicate, generation("flux-dev"))
    assert (err.code, err.retryable) == (ErrorCode.PROVIDER_UNAVAILABLE, True)


async def test_cancel_reaches_the_prediction(polling, control) -> None:
    control.faults(job_seconds=30)
    rec = Recorder()
    job = asyncio.create_task(polling.generate(generation("flux-pro", n=2), rec.progress))
    while len(rec.upstream_ids[-1:][0].split(",") if rec.upstream_ids else []) < 2:
        await asyncio.sleep(0.02)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await polling.cancel(rec.upstream_ids[-1])
    assert [c["path"] for c in control.calls("POST", "/v1/predictions/")] == [
        f"/v1/predictions/{i}/cancel" for i in rec.upstream_ids[-1].split(",")
    ]
    assert all(p["canceled"] for p in predictions(control))


async def test_a_prediction_canceled_elsewhere_fails_the_attempt(polling, control) -> None:
    control.faults(job_seconds=30)
    rec = Recorder()
    job = asyncio.create_task(polling.generate(generation("flux-dev"), rec.progress))
    while not rec.upstream_ids:
        await asyncio.sleep(0.02)
    import httpx

    httpx.post(f"{control.url}/v1/predictions/{rec.upstream_ids[0]}/cancel", headers={"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(ProviderError) as exc:
        await job
    assert exc.value.code is ErrorCode.PROVIDER_ERROR and "canceled" in exc.value.message


async def test_a_timed_out_prediction_is_canceled_upstream(emulator, control) -> None:
    control.faults(job_seconds=30)
    provider = ReplicateProvider.build(settings(emulator.url, REPLICATE_PREFER_WAIT_SECONDS=0, WORKER_JOB_TIMEOUT_SECONDS=0.4))
    try:
        err = await failure(provider, generation("flux-dev"))
    finally:
        await provider.close()
    assert (err.code, err.retryable) == (ErrorCode.TIMEOUT, True)
    assert predictions(control)[0]["canceled"]


@pytest.mark.parametrize(("fmt", "asked", "got"), [(gen.OUTPUT_FORMAT_WEBP, "webp", "webp"), (gen.OUTPUT_FORMAT_JPEG, "jpg", "jpeg")])
async def test_output_formats_are_asked_natively(replicate, control, fmt, asked, got) -> None:
    result = await replicate.generate(generation("flux-1.1-pro", output_format=fmt), Recorder().progress)
    assert predictions(control)[0]["input"]["output_format"] == asked
    assert image_info(result.images[0].data)[0] == got and result.images[0].output_format == fmt


# ---- through the real mesh: Kafka, storage, status and a worker process for replicate ----

@pytest.fixture(scope="module")
def replicate_worker(mesh, emulator):
    instance = start_worker(mesh, "replicate", REPLICATE_API_TOKEN=TOKEN, REPLICATE_BASE_URL=f"{emulator.url}/v1",
                            REPLICATE_PREFER_WAIT_SECONDS="1")
    yield instance
    mesh.stop(instance)


async def test_mesh_the_second_route_after_a_failed_bfl_attempt(mesh, replicate_worker, control) -> None:
    """What routing sends after bfl failed: attempt 2, on replicate; both attempts stay visible."""
    control.faults(job_seconds=1.5)
    g = queued(generation("flux-1.1-pro", "fallback", width=1024, height=768, n=2), "replicate")
    g.attempt = 2
    failed = g.attempts.add(number=1, provider="bfl")
    failed.error.CopyFrom(gen.GenerationError(code="provider_unavailable", message="bfl is down", retryable=True, provider="bfl"))
    await dispatch(mesh, g, routes=("bfl", "replicate"))
    done = await finished(mesh, g.id)
    assert done.state == gen.GENERATION_STATE_SUCCEEDED, done
    assert [(a.number, a.provider, bool(a.error.code)) for a in done.attempts] == [(1, "bfl", True), (2, "replicate", False)]
    assert sorted(done.attempts[1].upstream_id.split(",")) == sorted(p["id"] for p in predictions(control))
    assert [image_info(await fetch(mesh, ref.object_key)) for ref in done.images] == [("png", 1024, 768)] * 2


async def test_mesh_a_cancel_reaches_the_prediction(mesh, replicate_worker, control) -> None:
    control.faults(job_seconds=60)
    g = queued(generation("flux-dev", "slow"), "replicate")
    await dispatch(mesh, g)
    running = await wait_for(mesh, g.id, lambda s: s.attempts and s.attempts[0].upstream_id)
    await cancel(mesh, g.id)
    for _ in range(100):
        if predictions(control)[0]["canceled"]:
            break
        await asyncio.sleep(0.1)
    [p] = predictions(control)
    assert p["canceled"] and p["id"] == running.attempts[0].upstream_id

"""The sdapi adapter against the AUTOMATIC1111 emulator over real HTTP (no Kafka); through the
real mesh: tests/test_selfhosted_mesh.py."""

from __future__ import annotations

import asyncio

import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from tests.support.provider_jobs import (
    emulator_fixtures,
    EMULATED_INPUTS, FAST_POLLS, FAST_RETRIES, Control, Recorder, failure, generation, image_info, png,
)
from worker.providers.sdapi import SdapiProvider, SdapiSettings

LOGIN = "pixelmesh:gpu-box-pass-41"
MODEL = "sdxl-selfhosted"
CHECKPOINT = "sd_xl_base_1.0.safetensors [31e35c80fc]"
MODELS = {
    MODEL: {"checkpoint": CHECKPOINT, "extra": {"steps": 30, "cfg_scale": 7, "sampler_name": "DPM++ 2M"}},
    "loaded": {},
    "bad-sampler": {"extra": {"sampler_name": "Heun++ 9"}},
}


emulator, control = emulator_fixtures("sdapi", LOGIN)


def build(url: str, login: str = LOGIN, **extra) -> SdapiProvider:
    return SdapiProvider.build(SdapiSettings(**{
        "SDAPI_BASE_URL": url, "SDAPI_API_KEY": login, "SDAPI_MODELS": MODELS,
        **FAST_RETRIES, **FAST_POLLS, **EMULATED_INPUTS, **extra,
    }))


@pytest.fixture
async def sdapi(emulator, control):
    provider = build(emulator.url)
    yield provider
    await provider.close()


def jobs(control: Control) -> list[dict]:
    return control.get("/_emulator/sdapi/jobs")["jobs"]


async def test_txt2img_with_the_models_checkpoint_and_extras(sdapi, control) -> None:
    control.faults(job_seconds=0.6)
    rec = Recorder()
    g = generation(MODEL, "a castle", width=1216, height=832, n=3, negative_prompt="people", seed=2**40 + 5)
    result = await sdapi.generate(g, rec.progress)
    [job] = jobs(control)
    body = job["body"]
    assert job["path"] == "txt2img" and job["task_id"] == f"pixelmesh-{g.id}" == rec.upstream_ids[0]
    assert body["override_settings"] == {"sd_model_checkpoint": CHECKPOINT}
    assert (body["steps"], body["cfg_scale"], body["sampler_name"]) == (30, 7, "DPM++ 2M")
    assert (body["width"], body["height"], body["batch_size"], body["negative_prompt"]) == (1216, 832, 3, "people")
    assert body["seed"] == 5  # folded into A1111's 32-bit range
    # the batch, not the grid that comes first
    assert [image_info(i.data) for i in result.images] == [("png", 1216, 832)] * 3
    assert len({i.data for i in result.images}) == 3
    steps = [x for x in rec.percents if 0 < x < 100]
    assert steps and steps == sorted(steps)
    assert control.calls("GET", "/sdapi/v1/progress")


async def test_img2img_sends_the_input_and_its_mask(sdapi, control, emulator) -> None:
    image, mask = emulator.state.host_file(png(512, 512)), emulator.state.host_file(png(512, 512, (255, 255, 255)))
    g = generation("loaded", "make it winter", width=512, height=512, kind=gen.GENERATION_KIND_EDIT,
                   input_images=[gen.InputImage(url=image), gen.InputImage(url=mask, role="mask")])
    result = await sdapi.generate(g, Recorder().progress)
    [job] = jobs(control)
    assert job["path"] == "img2img" and len(job["body"]["init_images"]) == 1 and job["body"]["mask"].startswith("<")
    assert "override_settings" not in job["body"] and len(result.images) == 1


async def test_a_wrong_login_is_the_operators(emulator, control) -> None:
    provider = build(emulator.url, login="pixelmesh:wrong-pass-77")
    try:
        err = await failure(provider, generation(MODEL))
    finally:
        await provider.close()
    assert err.code is ErrorCode.PROVIDER_AUTH and "wrong-pass-77" not in err.message


async def test_an_unknown_sampler_may_go_to_another_route(sdapi, control) -> None:
    err = await failure(sdapi, generation("bad-sampler"))
    assert err.code is ErrorCode.PROVIDER_ERROR and err.retryable and "Sampler not found" in err.message
    assert len(control.calls("POST")) == 1


async def test_an_out_of_memory_is_retried_then_fails_retryably(sdapi, control) -> None:
    err = await failure(sdapi, generation(MODEL, "upstream-error"))
    assert err.code is ErrorCode.PROVIDER_UNAVAILABLE and err.retryable and "CUDA out of memory" in err.message


async def test_a_model_it_is_not_configured_for(sdapi, control) -> None:
    err = await failure(sdapi, generation("flux-dev"))
    assert err.code is ErrorCode.PROVIDER_ERROR and err.retryable and not control.calls()


async def test_injected_faults_are_retried(sdapi, control) -> None:
    control.faults(fail_first=2, fail_status=503)
    assert len((await sdapi.generate(generation(MODEL), Recorder().progress)).images) == 1
    control.reset()
    control.faults(fail_first=1, fail_status=429, retry_after=0.2)
    assert len((await sdapi.generate(generation(MODEL), Recorder().progress)).images) == 1


async def test_a_down_server(sdapi, control) -> None:
    control.faults(down=True)
    err = await failure(sdapi, generation(MODEL))
    assert (err.code, err.retryable) == (ErrorCode.PROVIDER_UNAVAILABLE, True)


async def test_one_job_at_a_time_and_a_cancel_interrupts_only_its_own(sdapi, control) -> None:
    control.faults(job_seconds=30)
    first_rec, second_rec = Recorder(), Recorder()
    first = asyncio.create_task(sdapi.generate(generation(MODEL, "first"), first_rec.progress))
    while not [x for x in first_rec.percents if x > 0]:
        await asyncio.sleep(0.02)
    second = asyncio.create_task(sdapi.generate(generation(MODEL, "second"), second_rec.progress))
    await asyncio.sleep(0.3)
    assert len(jobs(control)) == 1, "the second job waits in the worker, not on the server"
    second.cancel()  # never sent: nothing to interrupt
    with pytest.raises(asyncio.CancelledError):
        await second
    assert not control.calls("POST", "/sdapi/v1/interrupt")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert [j["interrupted"] for j in jobs(control)] == [True]
    assert len(control.calls("POST", "/sdapi/v1/interrupt")) == 1


async def test_a_timed_out_job_is_interrupted(emulator, control) -> None:
    control.faults(job_seconds=30)
    provider = build(emulator.url, WORKER_JOB_TIMEOUT_SECONDS=0.6)
    try:
        err = await failure(provider, generation(MODEL))
    finally:
        await provider.close()
    assert (err.code, err.retryable) == (ErrorCode.TIMEOUT, True)
    assert jobs(control)[0]["interrupted"]

"""The openai_compatible adapter against emulated vLLM-Omni, stable-diffusion.cpp and LocalAI
servers over real HTTP (no Kafka); through the real mesh: tests/test_selfhosted_mesh.py."""

from __future__ import annotations

import json

import pytest

from svckit.errors import ErrorCode
from tests.emulators.openai_compatible import MODEL
from tests.support.provider_jobs import emulator_fixtures, FAST_RETRIES, Control, Recorder, failure, generation, image_info
from worker.providers import configured
from worker.providers.openai_compatible import OpenAICompatibleProvider, OpenAICompatibleSettings

KEY = "local-gpu-key-7f1e"
FLUX = "flux-dev-selfhosted"
MODELS = {
    FLUX: {"model": MODEL, "extra": {"num_inference_steps": 28, "guidance_scale": 3.5}},
    "sd-cpp": {"flavor": "sdcpp", "extra": {"sample_params": {"sample_steps": 20}}},
    "local-ai": {"model": "stablediffusion", "flavor": "localai", "extra": {"step": 25}},
    "wrong-model": {"model": "someone/else"},
}


emulator, control = emulator_fixtures("openai_compatible", KEY)


def build(url: str, server: str = "vllm", **extra) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider.build(OpenAICompatibleSettings(**{
        "OPENAI_COMPATIBLE_BASE_URL": f"{url}/{server}/v1", "OPENAI_COMPATIBLE_MODELS": MODELS,
        **FAST_RETRIES, **extra,
    }))


@pytest.fixture
async def vllm(emulator, control):
    provider = build(emulator.url)
    yield provider
    await provider.close()


def requests(control: Control) -> list[dict]:
    return control.get("/_emulator/openai_compatible/requests")["requests"]


def test_a_base_url_and_models_make_the_pool_configured() -> None:
    assert "openai_compatible" in configured({"OPENAI_COMPATIBLE_BASE_URL": "http://gpu:8000/v1",
                                             "OPENAI_COMPATIBLE_MODELS": "{}"})
    assert "openai_compatible" not in configured({"OPENAI_COMPATIBLE_MODELS": "{}"})


def test_a_bad_models_entry_stops_the_worker(monkeypatch, capsys) -> None:
    monkeypatch.setenv("OPENAI_COMPATIBLE_BASE_URL", "http://gpu:8000/v1")
    monkeypatch.setenv("OPENAI_COMPATIBLE_MODELS", json.dumps({FLUX: {"flavor": "comfy"}}))
    with pytest.raises(SystemExit):
        OpenAICompatibleProvider.from_env()
    assert "OPENAI_COMPATIBLE_MODELS" in capsys.readouterr().err


async def test_vllm_gets_seed_negative_prompt_and_the_extra_fields(vllm, control) -> None:
    rec = Recorder()
    g = generation(FLUX, "a red fox", width=1344, height=768, n=2, negative_prompt="blur", seed=99)
    result = await vllm.generate(g, rec.progress)
    [req] = requests(control)
    assert req["server"] == "vllm" and req["body"] == {
        "prompt": "a red fox", "n": 2, "size": "1344x768", "model": MODEL, "response_format": "b64_json", "seed": 99,
        "negative_prompt": "blur", "num_inference_steps": 28, "guidance_scale": 3.5,
    }
    assert [image_info(i.data) for i in result.images] == [("png", 1344, 768)] * 2
    assert rec.percents[-1] == 100
    assert [c["path"] for c in control.calls()] == ["/vllm/v1/images/generations"]


async def test_the_seed_decides_the_image(vllm, control) -> None:
    one = (await vllm.generate(generation(FLUX, seed=1), Recorder().progress)).images[0].data
    two = (await vllm.generate(generation(FLUX, seed=2), Recorder().progress)).images[0].data
    again = (await vllm.generate(generation(FLUX, seed=1), Recorder().progress)).images[0].data
    assert one != two and one == again


async def test_sdcpp_gets_everything_inside_the_prompt(emulator, control) -> None:
    provider = build(emulator.url, "sdcpp")
    try:
        result = await provider.generate(generation("sd-cpp", "a cat", size="512x768", negative_prompt="dogs", seed=5),
                                         Recorder().progress)
    finally:
        await provider.close()
    [req] = requests(control)
    assert req["prompt"] == "a cat" and req["args"] == {"seed": 5, "sample_params": {"sample_steps": 20},
                                                        "negative_prompt": "dogs"}
    assert "model" not in req["body"] and image_info(result.images[0].data) == ("png", 512, 768)


async def test_localai_gets_the_negative_prompt_after_a_bar(emulator, control) -> None:
    provider = build(emulator.url, "localai")
    try:
        result = await provider.generate(generation("local-ai", "a cat", size="512x512", negative_prompt="dogs"),
                                         Recorder().progress)
    finally:
        await provider.close()
    [req] = requests(control)
    assert req["body"]["prompt"] == "a cat|dogs" and req["body"]["step"] == 25 and "seed" not in req["body"]
    assert req["body"]["response_format"] == "b64_json" and len(result.images) == 1


async def test_a_bar_in_a_localai_prompt_is_refused(emulator, control) -> None:
    provider = build(emulator.url, "localai")
    try:
        err = await failure(provider, generation("local-ai", "this | that"))
    finally:
        await provider.close()
    assert err.code is ErrorCode.INVALID_REQUEST and not requests(control)


@pytest.mark.parametrize("fmt", [2, 3])  # webp, jpeg: converted from the server's PNG
async def test_output_formats_are_converted(vllm, control, fmt) -> None:
    result = await vllm.generate(generation(FLUX, output_format=fmt), Recorder().progress)
    assert image_info(result.images[0].data)[0] == {2: "webp", 3: "jpeg"}[fmt]


async def test_fastapi_detail_errors_are_read(vllm, control) -> None:
    err = await failure(vllm, generation(FLUX, n=11))
    assert err.code is ErrorCode.INVALID_REQUEST and "n: Input should be less than or equal to 10" in err.message
    err = await failure(vllm, generation("wrong-model"))
    assert "The model `someone/else` does not exist." in err.message
    err = await failure(vllm, generation(FLUX, "upstream-error"))
    assert err.code is ErrorCode.PROVIDER_UNAVAILABLE and err.retryable and "illegal memory access" in err.message


async def test_sdcpp_and_localai_error_shapes_are_read(emulator, control) -> None:
    sdcpp, localai = build(emulator.url, "sdcpp"), build(emulator.url, "localai")
    try:
        err = await failure(sdcpp, generation("sd-cpp", "upstream-error"))
        assert err.retryable and "generate_image returned no results" in err.message
        sent = len(control.calls())
        err = await failure(sdcpp, generation("sd-cpp", "  "))
        assert err.code is ErrorCode.INVALID_REQUEST and len(control.calls()) == sent  # not sent
        err = await failure(localai, generation("local-ai", "upstream-error"))
        assert err.retryable and "could not load model" in err.message
    finally:
        await sdcpp.close()
        await localai.close()


async def test_a_model_it_is_not_configured_for_may_go_elsewhere(vllm, control) -> None:
    err = await failure(vllm, generation("sdxl-selfhosted"))
    assert err.code is ErrorCode.PROVIDER_ERROR and err.retryable and not requests(control)


async def test_image_inputs_are_refused_before_any_call(vllm, control) -> None:
    err = await failure(vllm, generation(FLUX, image_url="https://example.com/a.png"))
    assert err.code is ErrorCode.INVALID_REQUEST and not control.calls()


async def test_injected_faults_are_retried(vllm, control) -> None:
    control.faults(fail_first=2, fail_status=503)
    assert len((await vllm.generate(generation(FLUX), Recorder().progress)).images) == 1
    control.reset()
    control.faults(fail_first=1, fail_status=429, retry_after=0.2)
    assert len((await vllm.generate(generation(FLUX), Recorder().progress)).images) == 1
    assert len(control.calls("POST")) == 2


async def test_a_down_server(vllm, control) -> None:
    control.faults(down=True)
    err = await failure(vllm, generation(FLUX))
    assert (err.code, err.retryable) == (ErrorCode.PROVIDER_UNAVAILABLE, True)


async def test_a_key_is_sent_when_set_and_a_wrong_one_is_the_operators(emulator, control) -> None:
    right, wrong = build(emulator.url, OPENAI_COMPATIBLE_API_KEY=KEY), build(emulator.url, OPENAI_COMPATIBLE_API_KEY="x-1")
    try:
        assert len((await right.generate(generation(FLUX), Recorder().progress)).images) == 1
        err = await failure(wrong, generation(FLUX))
    finally:
        await right.close()
        await wrong.close()
    assert err.code is ErrorCode.PROVIDER_AUTH and "x-1" not in err.message
    assert [c["authorized"] for c in control.calls()] == [True, False]

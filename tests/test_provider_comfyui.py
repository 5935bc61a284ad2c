"""The comfyui adapter against the ComfyUI emulator over real HTTP and its WebSocket (no Kafka);
through the real mesh: tests/test_selfhosted_mesh.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import httpx
import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from tests.support.provider_jobs import (
    emulator_fixtures,
    EMULATED_INPUTS, FAST_POLLS, FAST_RETRIES, Control, Recorder, failure, generation, image_info, png,
)
from worker.providers.comfyui import ComfyUIProvider, ComfyUISettings
from worker.providers.base import ProviderError
from worker.providers.comfyui_templates import TemplateError, load_template

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "deploy/selfhosted/comfyui"
MODEL = "sdxl-selfhosted"


emulator, control = emulator_fixtures("comfyui")


def img2img_template(folder: Path) -> Path:
    """The example template turned image-to-image: LoadImage -> VAEEncode -> KSampler."""
    raw = json.loads((WORKFLOWS / f"{MODEL}.json").read_text())
    wf = raw["workflow"]
    wf["10"] = {"class_type": "LoadImage", "inputs": {"image": "example.png"}}
    wf["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    wf["3"]["inputs"]["latent_image"] = ["11", 0]
    wf["3"]["inputs"]["denoise"] = 0.6
    del wf["5"]
    raw["inputs"] = {k: v for k, v in raw["inputs"].items() if v[0] != "5"} | {"image": ["10", "image"]}
    path = folder / "sdxl-img2img.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.fixture(scope="module")
def workflows(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("workflows")
    (folder / f"{MODEL}.json").write_text((WORKFLOWS / f"{MODEL}.json").read_text())
    img2img_template(folder)
    return folder


def settings(url: str, workflows: Path, **extra) -> ComfyUISettings:
    return ComfyUISettings(**{
        "COMFYUI_BASE_URL": url, "COMFYUI_WORKFLOWS": str(workflows),
        **FAST_RETRIES, **EMULATED_INPUTS, **FAST_POLLS, **extra,
    })


@pytest.fixture
async def comfyui(emulator, control, workflows):
    provider = ComfyUIProvider.build(settings(emulator.url, workflows))
    yield provider
    await provider.close()


def prompts(control: Control) -> list[dict]:
    return control.get("/_emulator/comfyui/prompts")["prompts"]


# ---- templates ------------------------------------------------------------------------------


def test_the_example_template_is_valid() -> None:
    template = load_template(WORKFLOWS / f"{MODEL}.json")
    assert template.inputs["prompt"] == ("6", "text") and template.steps == 30


def test_a_steps_option_goes_to_the_steps_input_and_is_refused_without_one() -> None:
    template = load_template(WORKFLOWS / f"{MODEL}.json")
    g = generation(MODEL)
    g.params.provider_options.update({"steps": 12})
    node, name = template.inputs["steps"]
    assert template.fill(g)[node]["inputs"][name] == 12
    no_steps = dataclasses.replace(template, inputs={k: v for k, v in template.inputs.items() if k != "steps"}, steps=0)
    with pytest.raises(ProviderError, match="workflow takes no steps"):
        no_steps.fill(g)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda t: t["inputs"].update(prompt=["99", "text"]), "inputs.prompt: node '99'"),
        (lambda t: t["inputs"].update(seed=["3", "noise_seed"]), "inputs.seed: node 3 (KSampler) has no input 'noise_seed'"),
        (lambda t: t["inputs"].update(width=["3", "model"]), "inputs.width: node 3's 'model' is a link"),
        (lambda t: t["inputs"].update(guidance=["3", "cfg"]), "inputs.guidance: not a request field"),
        (lambda t: t["inputs"].pop("prompt"), "inputs: maps request fields"),
        (lambda t: t["inputs"].pop("height"), "width and height are mapped together"),
        (lambda t: t["workflow"]["8"]["inputs"].update(samples=["42", 0]), "workflow.8.inputs.samples: links to node '42'"),
        (lambda t: t["workflow"]["9"].pop("class_type"), "workflow.9: needs class_type"),
        (lambda t: t.update(steps="many"), "steps: a positive integer"),
        (lambda t: t.update(sampler="euler"), "a template has `workflow`, `inputs`"),
    ],
)
def test_a_bad_template_is_refused_naming_the_entry(tmp_path, change, named) -> None:
    raw = json.loads((WORKFLOWS / f"{MODEL}.json").read_text())
    change(raw)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(TemplateError) as exc:
        load_template(path)
    assert str(path) in str(exc.value) and named in str(exc.value)


def test_the_worker_stops_at_start_up_on_a_bad_template(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "x.json").write_text("{not json")
    monkeypatch.setenv("COMFYUI_BASE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("COMFYUI_WORKFLOWS", str(tmp_path))
    with pytest.raises(SystemExit):
        ComfyUIProvider.from_env()
    assert f"COMFYUI_WORKFLOWS: Value error, {tmp_path / 'x.json'}: not readable as JSON" in capsys.readouterr().err


# ---- the adapter against the emulator --------------------------------------------------------


async def test_txt2img_fills_the_template_and_follows_the_websocket(comfyui, control) -> None:
    control.faults(job_seconds=0.5)
    rec = Recorder()
    g = generation(MODEL, "a red fox", width=1152, height=896, n=2, negative_prompt="blurry", seed=1234)
    result = await comfyui.generate(g, rec.progress)
    [p] = prompts(control)
    wf = p["workflow"]
    assert wf["6"]["inputs"]["text"] == "a red fox" and wf["7"]["inputs"]["text"] == "blurry"
    assert (wf["5"]["inputs"]["width"], wf["5"]["inputs"]["height"], wf["5"]["inputs"]["batch_size"]) == (1152, 896, 2)
    assert wf["3"]["inputs"]["seed"] == 1234 and wf["3"]["inputs"]["steps"] == 30
    assert [image_info(i.data) for i in result.images] == [("png", 1152, 896)] * 2
    assert result.images[0].data != result.images[1].data
    assert rec.upstream_ids == [p["id"]]
    # the sampler's steps, as they came over the WebSocket
    steps = [x for x in rec.percents if 0 < x < 100]
    assert len(steps) >= 5 and steps == sorted(steps) and not rec.partials
    paths = {c["path"] for c in control.calls()}
    assert {"/prompt", f"/history/{p['id']}", "/view"} <= paths


async def test_a_template_default_negative_prompt_stays_when_none_is_given(comfyui, control) -> None:
    await comfyui.generate(generation(MODEL, "a fox"), Recorder().progress)
    assert prompts(control)[0]["workflow"]["7"]["inputs"]["text"] == "blurry, low quality, watermark"


async def test_streaming_clients_get_the_previews_as_partial_images(comfyui, control) -> None:
    control.faults(job_seconds=0.3)
    rec = Recorder()
    g = generation(MODEL, "a fox", width=832, height=1216, stream=True, partial_images=2,
                   output_format=gen.OUTPUT_FORMAT_WEBP)
    result = await comfyui.generate(g, rec.progress)
    assert rec.partials and image_info(rec.partials[0].data) == ("webp", 832, 1216)
    assert image_info(result.images[0].data) == ("webp", 832, 1216)


async def test_without_a_websocket_the_history_is_polled(comfyui, control, emulator) -> None:
    httpx.post(f"{emulator.url}/_emulator/comfyui/websocket", json={"enabled": False}).raise_for_status()
    control.faults(job_seconds=0.3)
    result = await comfyui.generate(generation(MODEL), Recorder().progress)
    [p] = prompts(control)
    assert len(result.images) == 1 and len(control.calls("GET", f"/history/{p['id']}")) >= 2


async def test_image_to_image_uploads_the_input(comfyui, control, emulator) -> None:
    url = emulator.state.host_file(png(640, 480))
    g = generation("sdxl-img2img", "as a watercolour", width=640, height=480, image_url=url,
                   kind=gen.GENERATION_KIND_EDIT)
    result = await comfyui.generate(g, Recorder().progress)
    uploads = control.get("/_emulator/comfyui/uploads")["uploads"]
    [name] = uploads
    assert name == f"pixelmesh-{g.id}.png" and prompts(control)[0]["workflow"]["10"]["inputs"]["image"] == name
    assert image_info(result.images[0].data)[1:] == (640, 480)


async def test_a_template_refuses_what_it_cannot_take(comfyui, control) -> None:
    err = await failure(comfyui, generation("sdxl-img2img", "no image given"))
    assert err.code is ErrorCode.INVALID_REQUEST and "needs an input image" in err.message
    err = await failure(comfyui, generation(MODEL, image_url="data:image/png;base64,AAAA"))
    assert err.code is ErrorCode.INVALID_REQUEST
    assert not control.calls("POST", "/prompt")


async def test_a_model_without_a_template_may_go_to_another_route(comfyui, control) -> None:
    err = await failure(comfyui, generation("flux-dev"))
    assert err.code is ErrorCode.PROVIDER_ERROR and err.retryable and "no workflow template" in err.message


async def test_a_workflow_comfyui_refuses_names_the_node(emulator, control, tmp_path) -> None:
    raw = json.loads((WORKFLOWS / f"{MODEL}.json").read_text())
    raw["workflow"]["4"]["inputs"]["ckpt_name"] = "missing.safetensors"
    (tmp_path / f"{MODEL}.json").write_text(json.dumps(raw))
    provider = ComfyUIProvider.build(settings(emulator.url, tmp_path))
    try:
        err = await failure(provider, generation(MODEL))
    finally:
        await provider.close()
    assert err.code is ErrorCode.PROVIDER_ERROR and err.retryable
    assert "node 4 (CheckpointLoaderSimple): Value not in list: ckpt_name: 'missing.safetensors'" in err.message
    assert len(control.calls("POST", "/prompt")) == 1  # a 400 is not retried


async def test_an_execution_error_fails_the_attempt_retryably(comfyui, control) -> None:
    err = await failure(comfyui, generation(MODEL, "upstream-error"))
    assert err.code is ErrorCode.PROVIDER_ERROR and err.retryable and "CUDA out of memory" in err.message


async def test_injected_503s_and_429s_are_retried(comfyui, control) -> None:
    control.faults(fail_first=2, fail_status=503)
    assert len((await comfyui.generate(generation(MODEL), Recorder().progress)).images) == 1
    control.reset()
    control.faults(fail_first=1, fail_status=429, retry_after=0.2)
    assert len((await comfyui.generate(generation(MODEL), Recorder().progress)).images) == 1
    assert len(control.calls("POST", "/prompt")) == 2


async def test_a_down_server(comfyui, control) -> None:
    control.faults(down=True)
    err = await failure(comfyui, generation(MODEL))
    assert (err.code, err.retryable) == (ErrorCode.PROVIDER_UNAVAILABLE, True)


async def test_cancel_of_a_running_prompt_interrupts_it(comfyui, control) -> None:
    control.faults(job_seconds=30)
    rec = Recorder()
    job = asyncio.create_task(comfyui.generate(generation(MODEL), rec.progress))
    while not [x for x in rec.percents if x > 0]:
        await asyncio.sleep(0.02)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await comfyui.cancel(rec.upstream_ids[0])
    [p] = prompts(control)
    assert p["interrupted"] and [c["path"] for c in control.calls("POST")][-2:] == ["/interrupt", "/queue"]


async def test_cancel_of_a_queued_prompt_deletes_it(comfyui, control) -> None:
    control.faults(job_seconds=30)
    first = asyncio.create_task(comfyui.generate(generation(MODEL, "first"), Recorder().progress))
    rec = Recorder()
    second = asyncio.create_task(comfyui.generate(generation(MODEL, "second"), rec.progress))
    while not rec.upstream_ids:
        await asyncio.sleep(0.02)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    await comfyui.cancel(rec.upstream_ids[0])
    queued = next(p for p in prompts(control) if p["id"] == rec.upstream_ids[0])
    running = next(p for p in prompts(control) if p["id"] != rec.upstream_ids[0])
    assert queued["state"] == "deleted" and not running["interrupted"]
    assert "/interrupt" not in [c["path"] for c in control.calls("POST")]  # the other prompt runs on
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_timed_out_prompt_is_cancelled(emulator, control, workflows) -> None:
    control.faults(job_seconds=30)
    provider = ComfyUIProvider.build(settings(emulator.url, workflows, WORKER_JOB_TIMEOUT_SECONDS=0.6))
    try:
        err = await failure(provider, generation(MODEL))
    finally:
        await provider.close()
    assert (err.code, err.retryable) == (ErrorCode.TIMEOUT, True)
    assert prompts(control)[0]["interrupted"]


async def test_no_origin_header_is_sent(comfyui, control, emulator) -> None:
    """ComfyUI refuses a foreign Origin (403); the adapter's HTTP calls and WebSocket send none."""
    r = httpx.get(f"{emulator.url}/history/x", headers={"Origin": "http://elsewhere.example"})
    assert r.status_code == 403
    await comfyui.generate(generation(MODEL), Recorder().progress)

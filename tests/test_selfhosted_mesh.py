"""The self-hosted pools through the real mesh: Kafka, routing (with the operator's catalog
file), pricing (with its price file), storage, status, and a worker per pool against its
emulator: comfyui (the example workflow templates), openai_compatible (vLLM-Omni) and sdapi
(AUTOMATIC1111).
Generations go through the public API; fallbacks go from one self-hosted pool to another."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from tests.emulators.harness import EmulatorServer
from tests.emulators.openai_compatible import MODEL as VLLM_MODEL
from tests.support.ledger import admin_client, funded_key, settled
from tests.support.polling import wait_finished
from tests.support.ports import free_port
from tests.support.provider_jobs import Control, image_info
from tests.support.provider_mesh import current, require_route, start_worker
from tests.support.sse import events

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "deploy/selfhosted/comfyui"
MODEL = "sdxl-selfhosted"
FLUX = "flux-dev-selfhosted"
POOLS = ("comfyui", "openai_compatible", "sdapi")
CHECKPOINT = "sd_xl_base_1.0.safetensors [31e35c80fc]"


@pytest.fixture(scope="module")
def pools(mesh):
    """An emulator and a worker for each self-hosted pool."""
    for pool in POOLS:
        require_route(mesh, pool)
    servers = {pool: EmulatorServer(pool, free_port()).start() for pool in POOLS}
    served = {FLUX: {"model": VLLM_MODEL, "extra": {"num_inference_steps": 28, "guidance_scale": 3.5}}}
    workers = [
        start_worker(mesh, "comfyui", COMFYUI_BASE_URL=servers["comfyui"].url, COMFYUI_WORKFLOWS=str(WORKFLOWS)),
        start_worker(mesh, "openai_compatible", OPENAI_COMPATIBLE_BASE_URL=f"{servers['openai_compatible'].url}/vllm/v1",
                     OPENAI_COMPATIBLE_MODELS=json.dumps(served)),
        start_worker(mesh, "sdapi", SDAPI_BASE_URL=servers["sdapi"].url,
                     SDAPI_MODELS=json.dumps({MODEL: {"checkpoint": CHECKPOINT, "extra": {"steps": 25}}})),
    ]
    yield servers
    for instance in workers:
        mesh.stop(instance)
    for server in servers.values():
        server.stop()


@pytest.fixture
def comfy(pools) -> Control:
    c = Control(pools["comfyui"].url)
    c.reset()
    return c


@pytest.fixture
def vllm(pools) -> Control:
    c = Control(pools["openai_compatible"].url)
    c.reset()
    return c


@pytest.fixture
def a1111(pools) -> Control:
    c = Control(pools["sdapi"].url)
    c.reset()
    return c


def sdapi_jobs(control: Control) -> list[dict]:
    return control.get("/_emulator/sdapi/jobs")["jobs"]


def prompts(control: Control) -> list[dict]:
    return control.get("/_emulator/comfyui/prompts")["prompts"]


async def test_mesh_generates_through_the_api(mesh, pools, comfy, http) -> None:
    r = await http.post("/api/v2/generate", json={"model": MODEL, "prompt": "a lighthouse", "size": "1216x832",
                                                  "negative_prompt": "fog", "seed": 77})
    assert r.status_code == 200, r.text
    done = await wait_finished(http, r.json()["id"], timeout=120)
    assert done["status"] == "completed", done
    [p] = prompts(comfy)
    assert p["workflow"]["3"]["inputs"]["seed"] == 77 and p["workflow"]["7"]["inputs"]["text"] == "fog"
    assert [a["provider"] for a in done["attempts"]] == ["comfyui"]
    assert (await current(mesh, done["id"])).attempts[0].upstream_id == p["id"]  # what a cancel reaches
    assert done["result_metadata"]["width"] == 1216 and done["tokens_spent"] == 1
    async with httpx.AsyncClient() as plain:
        image = (await plain.get(done["result_url"])).content
    assert image_info(image) == ("webp", 1216, 832)


async def test_mesh_a_failure_is_refunded(mesh, pools, comfy, a1111, edge_url) -> None:
    admin = admin_client(mesh)
    key = funded_key(admin, "pro", tokens=10)
    async with httpx.AsyncClient(base_url=edge_url, headers={"Authorization": f"Bearer {key.secret}"}, timeout=120) as client:
        r = await client.post("/api/v2/generate", json={"model": MODEL, "prompt": "upstream-error"})
        assert r.status_code == 200, r.text
        done = await wait_finished(client, r.json()["id"], timeout=120)
    assert done["status"] == "failed", done
    # both routes tried: ComfyUI's execution error, then A1111's 500 (retried, then given up)
    assert [(a["provider"], a["error"]["code"]) for a in done["attempts"]] == [
        ("comfyui", "provider_error"), ("sdapi", "provider_unavailable")]
    assert "CUDA out of memory" in done["error"]["message"] and done["tokens_spent"] == 0
    ledger = await settled(admin, key.account_id)
    assert ledger.balance.available_tokens == 10 and ledger.balance.reserved_tokens == 0


async def test_mesh_a_503_is_retried_on_the_same_pool(pools, comfy, http) -> None:
    comfy.faults(fail_first=2, fail_status=503)
    r = await http.post("/api/v2/generate", json={"model": MODEL, "prompt": "a harbour"})
    done = await wait_finished(http, r.json()["id"], timeout=120)
    assert done["status"] == "completed" and [a["provider"] for a in done["attempts"]] == ["comfyui"], done
    assert len(comfy.calls("POST", "/prompt")) == 3


async def test_mesh_a_cancel_interrupts_the_prompt(pools, comfy, http) -> None:
    comfy.faults(job_seconds=60)
    r = await http.post("/api/v2/generate", json={"model": MODEL, "prompt": "slow"})
    generation_id = r.json()["id"]
    for _ in range(200):
        listed = prompts(comfy)
        if listed and listed[0]["state"] == "running":
            break
        await asyncio.sleep(0.1)
    cancelled = await http.post(f"/api/v2/generate/{generation_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    for _ in range(100):
        if prompts(comfy)[0]["interrupted"]:
            break
        await asyncio.sleep(0.1)
    [p] = prompts(comfy)
    assert p["interrupted"] and "/interrupt" in [c["path"] for c in comfy.calls("POST")]


def test_mesh_serves_the_operator_catalog_model(pools, mesh, edge_url, api_key) -> None:
    r = httpx.get(f"{edge_url}/v1/models/{MODEL}", headers={"Authorization": f"Bearer {api_key}"})
    assert r.status_code == 200, r.text
    assert r.json()["owned_by"] == "self-hosted"
    price = httpx.post(f"{edge_url}/api/v2/price", headers={"Authorization": f"Bearer {api_key}"},
                       json={"model": MODEL, "size": "1024x1024", "n": 2})
    assert price.status_code == 200 and price.json()["tokens"] == 2, price.text


async def test_mesh_flux_on_the_openai_compatible_pool(pools, vllm, comfy, http) -> None:
    r = await http.post("/v1/images/generations", json={"model": FLUX, "prompt": "a fox", "size": "1344x768",
                                                        "seed": 5, "response_format": "b64_json"})
    assert r.status_code == 200, r.text
    [req] = vllm.get("/_emulator/openai_compatible/requests")["requests"]
    assert req["body"]["seed"] == 5 and req["body"]["num_inference_steps"] == 28 and req["body"]["model"] == VLLM_MODEL
    assert r.json()["perf"]["model_used"] == FLUX and not prompts(comfy)


async def test_mesh_provider_options_reach_the_pool_that_takes_them(pools, vllm, comfy, a1111, http) -> None:
    r = await http.post("/v1/images/generations", json={
        "model": FLUX, "prompt": "a fox", "response_format": "b64_json",
        "provider_options": {"num_inference_steps": 8, "guidance_scale": 2.5}})
    assert r.status_code == 200, r.text
    [req] = vllm.get("/_emulator/openai_compatible/requests")["requests"]
    assert req["body"]["num_inference_steps"] == 8 and req["body"]["guidance_scale"] == 2.5  # over the operator's 28
    # `steps` reaches ComfyUI's sampler node; with cfg_scale (A1111's alone) the first
    # route, ComfyUI, is skipped: the request goes to A1111 at once.
    r = await http.post("/api/v2/generate", json={"model": MODEL, "prompt": "a mill", "provider_options": {"steps": 12}})
    done = await wait_finished(http, r.json()["id"], timeout=120)
    assert done["status"] == "completed", done
    [p] = prompts(comfy)
    assert p["workflow"]["3"]["inputs"]["steps"] == 12
    r = await http.post("/api/v2/generate", json={
        "model": MODEL, "prompt": "a mill", "provider_options": {"steps": "14", "cfg_scale": 5, "sampler_name": "DDIM"}})
    done = await wait_finished(http, r.json()["id"], timeout=120)
    assert done["status"] == "completed", done
    assert [a["provider"] for a in done["attempts"]] == ["sdapi"] and len(prompts(comfy)) == 1
    [job] = sdapi_jobs(a1111)
    assert (job["body"]["steps"], job["body"]["cfg_scale"], job["body"]["sampler_name"]) == (14, 5, "DDIM")
    r = await http.post("/api/v2/generate", json={"model": MODEL, "prompt": "a mill", "provider_options": {"steps": 0}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "provider_options.steps", r.text


async def test_mesh_a_down_server_falls_back_to_the_other_pool(pools, vllm, comfy, http) -> None:
    vllm.faults(down=True)
    r = await http.post("/api/v2/generate", json={"model": FLUX, "prompt": "a harbour at night", "size": "832x1216"})
    done = await wait_finished(http, r.json()["id"], timeout=180)
    assert done["status"] == "completed", done
    assert [(a["provider"], (a["error"] or {}).get("code")) for a in done["attempts"]] == [
        ("openai_compatible", "provider_unavailable"), ("comfyui", None)]
    [p] = prompts(comfy)
    assert p["workflow"]["6"]["inputs"]["text"] == "a harbour at night" and p["workflow"]["27"]["inputs"]["width"] == 832
    assert done["tokens_spent"] == 1 and done["result_metadata"]["height"] == 1216


async def test_mesh_a_failure_on_both_pools_is_refunded(mesh, pools, vllm, comfy, edge_url) -> None:
    admin = admin_client(mesh)
    key = funded_key(admin, "pro", tokens=10)
    async with httpx.AsyncClient(base_url=edge_url, headers={"Authorization": f"Bearer {key.secret}"}, timeout=120) as client:
        r = await client.post("/api/v2/generate", json={"model": FLUX, "prompt": "upstream-error", "n": 2})
        assert r.status_code == 200, r.text
        done = await wait_finished(client, r.json()["id"], timeout=180)
    assert done["status"] == "failed", done
    assert [a["provider"] for a in done["attempts"]] == ["openai_compatible", "comfyui"]
    assert "CUDA out of memory" in done["error"]["message"] and done["tokens_spent"] == 0
    ledger = await settled(admin, key.account_id)
    assert ledger.balance.available_tokens == 10 and ledger.balance.reserved_tokens == 0


async def test_mesh_sdxl_falls_back_from_comfyui_to_a1111(pools, comfy, a1111, http) -> None:
    comfy.faults(down=True)
    r = await http.post("/api/v2/generate", json={"model": MODEL, "prompt": "a windmill", "size": "896x1152",
                                                  "negative_prompt": "fog", "seed": 9, "n": 2})
    done = await wait_finished(http, r.json()["id"], timeout=180)
    assert done["status"] == "completed", done
    assert [a["provider"] for a in done["attempts"]] == ["comfyui", "sdapi"]
    [job] = sdapi_jobs(a1111)
    body = job["body"]
    assert (body["prompt"], body["negative_prompt"], body["seed"], body["batch_size"]) == ("a windmill", "fog", 9, 2)
    assert body["override_settings"] == {"sd_model_checkpoint": CHECKPOINT} and body["steps"] == 25
    assert len(done["result_urls"]) == 2 and done["tokens_spent"] == 2


async def test_mesh_a_cancel_interrupts_a1111(pools, comfy, a1111, http) -> None:
    comfy.faults(down=True)
    a1111.faults(job_seconds=60)
    r = await http.post("/api/v2/generate", json={"model": MODEL, "prompt": "slow"})
    generation_id = r.json()["id"]
    for _ in range(300):
        if sdapi_jobs(a1111):
            break
        await asyncio.sleep(0.1)
    cancelled = await http.post(f"/api/v2/generate/{generation_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    for _ in range(100):
        if sdapi_jobs(a1111)[0]["interrupted"]:
            break
        await asyncio.sleep(0.1)
    assert sdapi_jobs(a1111)[0]["interrupted"] and a1111.calls("POST", "/sdapi/v1/interrupt")
    done = await wait_finished(http, generation_id)
    assert done["state"] == "cancelled" and done["tokens_spent"] == 0


async def test_mesh_comfyui_progress_reaches_the_event_stream(pools, comfy, http) -> None:
    """The sampler's steps over ComfyUI's WebSocket become `running` events with progress."""
    comfy.faults(job_seconds=3)
    r = await http.post("/api/v2/generate", json={"model": MODEL, "prompt": "a slow sunrise"})
    seen = []
    async with http.stream("GET", f"/api/v2/generate/{r.json()['id']}/events") as stream:
        async for event in events(stream):
            seen.append((event.event, event.json()["progress"]))
    steps = [progress for name, progress in seen if name == "running" and 0 < progress < 100]
    assert len(steps) >= 3 and steps == sorted(steps), seen
    assert seen[-1][0] == "completed"

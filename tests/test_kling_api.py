"""Kling's task routes (/kling/v1/images/...) through the real mesh: the edge, routing, pricing,
a kling worker and the Kling emulator; plus the models on /api/v2/generate and /v1/images/generations."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import pytest
from PIL import Image

from tests.emulators.harness import EmulatorServer
from tests.support.ledger import admin_client, explain, funded_key, settled
from tests.support.ports import free_port
from tests.support.provider_jobs import Control, image_info, png
from tests.support.provider_mesh import require_route, start_worker

ACCESS, SECRET = "ak-api-5521", "sk-api-kling-8830"
GENERATIONS = "/kling/v1/images/generations"
TRY_ON = "/kling/v1/images/kolors-virtual-try-on"


@pytest.fixture(scope="module")
def kling_pool(mesh):
    require_route(mesh, "kling")
    server = EmulatorServer("kling", free_port(), api_key=f"{ACCESS}:{SECRET}").start()
    instance = start_worker(mesh, "kling", KLING_ACCESS_KEY=ACCESS, KLING_SECRET_KEY=SECRET, KLING_BASE_URL=server.url,
                            WORKER_INPUT_URLS_ALLOW_PRIVATE="true")
    yield server
    mesh.stop(instance)
    server.stop()


@pytest.fixture
def control(kling_pool) -> Control:
    c = Control(kling_pool.url)
    c.reset()
    return c


@pytest.fixture(scope="module")
def admin(mesh):  # noqa: ANN001, ANN201
    with admin_client(mesh) as client:
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tasks(control: Control) -> list[dict]:
    return control.get("/_emulator/kling/tasks")["tasks"]


async def task_done(http: httpx.AsyncClient, path: str, task_id: str, timeout: float = 60) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await http.get(f"{path}/{task_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["code"] == 0 and body["request_id"]
        if body["data"]["task_status"] in ("succeed", "failed") or asyncio.get_running_loop().time() > deadline:
            return body["data"]
        await asyncio.sleep(0.2)


async def test_text_to_image_task_submit_and_get(kling_pool, control, http) -> None:
    r = await http.post(GENERATIONS, json={"model_name": "kling-v2", "prompt": "a red fox", "n": 2, "aspect_ratio": "3:2",
                                           "external_task_id": "order-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["code"], body["message"]) == (0, "SUCCEED") and set(body) == {"code", "message", "request_id", "data"}
    task = body["data"]
    assert task["task_status"] == "submitted" and task["task_id"].startswith("gen_")
    assert task["task_info"] == {"external_task_id": "order-1"} and isinstance(task["created_at"], int)
    done = await task_done(http, GENERATIONS, task["task_id"])
    assert done["task_status"] == "succeed", done
    assert [i["index"] for i in done["task_result"]["images"]] == [0, 1]
    assert isinstance(done["final_unit_deduction"], str)
    for image in done["task_result"]["images"]:
        assert image_info(httpx.get(image["url"]).content) == ("png", 1248, 832)
    [upstream] = tasks(control)
    assert upstream["body"] == {"model_name": "kling-v2", "prompt": "a red fox", "n": 2, "aspect_ratio": "3:2"}
    # The same external_task_id again is the same task (unique per account, as on Kling).
    again = await http.post(GENERATIONS, json={"model_name": "kling-v2", "prompt": "a red fox", "n": 2,
                                               "aspect_ratio": "3:2", "external_task_id": "order-1"})
    assert again.json()["data"]["task_id"] == task["task_id"] and len(tasks(control)) == 1
    assert (await http.get(f"{TRY_ON}/{task['task_id']}")).json()["data"]["task_status"] == "succeed"


async def test_a_2k_task_on_kling_v2_doubles_the_sides(kling_pool, control, http) -> None:
    r = await http.post(GENERATIONS, json={"model_name": "kling-v2", "prompt": "a red fox", "aspect_ratio": "3:2",
                                           "resolution": "2k"})
    assert r.status_code == 200, r.text
    done = await task_done(http, GENERATIONS, r.json()["data"]["task_id"])
    assert done["task_status"] == "succeed", done
    assert image_info(httpx.get(done["task_result"]["images"][0]["url"]).content) == ("png", 2496, 1664)
    assert tasks(control)[0]["body"]["resolution"] == "2k"


async def test_image_to_image_with_a_face_reference(kling_pool, control, http) -> None:
    r = await http.post(GENERATIONS, json={"model_name": "kling-v1-5", "prompt": "the same face, smiling",
                                           "image": b64(png(400, 600)), "image_reference": "face",
                                           "image_fidelity": 0.6, "aspect_ratio": "2:3"})
    assert r.status_code == 200, r.text
    done = await task_done(http, GENERATIONS, r.json()["data"]["task_id"])
    assert done["task_status"] == "succeed", done
    body = tasks(control)[0]["body"]
    assert (body["image_reference"], body["image_fidelity"], body["aspect_ratio"]) == ("face", 0.6, "2:3")
    assert body["image"].startswith("<image ")


async def test_try_on_with_an_upload_and_a_url(kling_pool, control, http) -> None:
    garment = kling_pool.state.host_file(png(500, 500, (10, 120, 200)))
    r = await http.post(TRY_ON, json={"model_name": "kolors-virtual-try-on-v1-5", "human_image": b64(png(360, 640)),
                                      "cloth_image": garment})
    assert r.status_code == 200, r.text
    task_id = r.json()["data"]["task_id"]
    done = await task_done(http, TRY_ON, task_id)
    assert done["task_status"] == "succeed", done
    [image] = done["task_result"]["images"]
    assert image_info(httpx.get(image["url"]).content) == ("png", 360, 640)
    [upstream] = tasks(control)
    assert upstream["kind"] == "kolors-virtual-try-on" and upstream["body"]["model_name"] == "kolors-virtual-try-on-v1-5"
    assert upstream["body"]["human_image"].startswith("<image ") and upstream["body"]["cloth_image"].startswith("<image ")
    v2 = (await http.get(f"/api/v2/generate/{task_id}")).json()
    assert v2["status"] == "completed" and v2["model_slug"] == "kolors-virtual-try-on-v1-5"


def _error(r: httpx.Response, status: int, code: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and "data" not in body and body["request_id"], body
    return body["message"]


@pytest.mark.parametrize(("body", "named"), [
    ({"human_image": b64(png(400, 400))}, "cloth_image"),
    ({"human_image": b64(png(200, 400)), "cloth_image": b64(png(400, 400))}, "human_image"),
    ({"human_image": b64(b"not an image at all"), "cloth_image": b64(png(400, 400))}, "human_image"),
    ({"human_image": "ftp://example.com/p.png", "cloth_image": b64(png(400, 400))}, "human_image"),
    ({"human_image": b64(png(400, 400)), "cloth_image": "https://exa mple.com/x.png"}, "cloth_image"),
    ({"human_image": b64(png(400, 400)), "cloth_image": b64(png(400, 400)), "prompt": "wear it"}, "prompt"),
    ({"model_name": "kling-v2", "human_image": b64(png(400, 400)), "cloth_image": b64(png(400, 400))}, "model_name"),
])
async def test_try_on_inputs_are_checked_with_clear_errors(kling_pool, control, http, body, named) -> None:
    message = _error(await http.post(TRY_ON, json=body), 400, 1201)
    assert named in message
    assert tasks(control) == []


@pytest.mark.parametrize(("body", "named"), [
    ({"model_name": "kling-v2"}, "prompt"),
    ({"model_name": "kling-v2", "prompt": "x", "image_reference": "face"}, "image_reference"),
    ({"model_name": "kling-v1", "prompt": "x", "resolution": "2k"}, "resolution"),  # kling-v2 only
    ({"model_name": "kling-v2", "prompt": "x", "resolution": "2k", "image": b64(png(400, 400))}, "2k"),
    ({"model_name": "kling-v2", "prompt": "x", "n": 10}, "n"),
    ({"model_name": "kling-v1", "prompt": "x", "aspect_ratio": "21:9"}, "21:9"),
    ({"model_name": "kling-v2", "prompt": "x", "image": b64(png(1000, 300))}, "aspect ratio"),
    ({"model_name": "kling-v2", "prompt": "x", "image": b64(png(400, 400)), "image_fidelity": 0.5}, "image_fidelity"),
    ({"model_name": "kling-v2", "prompt": "x", "watermark_info": {"enabled": True}}, "watermark_info"),
    ({"model_name": "kling-v2", "prompt": "x", "image": b64(png(400, 400)), "negative_prompt": "blur"}, "negative_prompt"),
    ({"model_name": "kolors-virtual-try-on-v1", "prompt": "a shirt"}, "person"),
])
async def test_generation_bodies_are_checked_with_clear_errors(kling_pool, control, http, body, named) -> None:
    assert named in _error(await http.post(GENERATIONS, json=body), 400, 1201)
    assert tasks(control) == []


async def test_unknown_models_tasks_and_keys(kling_pool, edge_url, http) -> None:
    _error(await http.post(GENERATIONS, json={"model_name": "kling-v9", "prompt": "x"}), 404, 1203)
    _error(await http.get(f"{GENERATIONS}/gen_01NOSUCHTASK"), 404, 1203)
    _error(await http.post(GENERATIONS, content=b"{not json"), 400, 1201)
    async with httpx.AsyncClient(base_url=edge_url, headers={"Authorization": "Bearer sk-nope"}) as stranger:
        _error(await stranger.post(GENERATIONS, json={"prompt": "x"}), 401, 1000)
        _error(await stranger.get(f"{GENERATIONS}/gen_01NOSUCHTASK"), 401, 1000)


async def test_a_refused_task_fails_and_is_refunded(kling_pool, control, edge_url, admin) -> None:
    key = funded_key(admin, "pro", tokens=10)
    async with httpx.AsyncClient(base_url=edge_url, headers={"Authorization": f"Bearer {key.secret}"}, timeout=60) as http:
        r = await http.post(GENERATIONS, json={"model_name": "kling-v2", "prompt": "unsafe-output please", "n": 3})
        assert r.status_code == 200, r.text
        assert admin.balance(key.account_id).balance.available_tokens == 10 - 3 * 2  # $0.02 an image: 2 tokens each
        done = await task_done(http, GENERATIONS, r.json()["data"]["task_id"])
        assert done["task_status"] == "failed" and "risk" in done["task_status_msg"], done
        assert "task_result" not in done
        refused = await http.post(GENERATIONS, json={"model_name": "kling-v2", "prompt": "a forbidden thing"})
        assert refused.status_code == 200  # accepted here: Kling's own moderation refuses it (1301)
        done = await task_done(http, GENERATIONS, refused.json()["data"]["task_id"])
        assert done["task_status"] == "failed" and "1301" in done["task_status_msg"], done
    ledger = await settled(admin, key.account_id)
    assert ledger.balance.available_tokens == 10
    assert [e.kind for e in ledger.entries] == ["credit", "reserve", "release", "reserve", "release"]
    explain(ledger)


async def test_too_little_balance_is_klings_resource_pack_code(kling_pool, control, edge_url, admin) -> None:
    key = funded_key(admin, "pro", tokens=1)
    async with httpx.AsyncClient(base_url=edge_url, headers={"Authorization": f"Bearer {key.secret}"}) as http:
        _error(await http.post(GENERATIONS, json={"model_name": "kling-v2", "prompt": "x", "n": 2}), 429, 1102)
    assert tasks(control) == []


async def test_kling_models_on_the_v2_and_openai_routes(kling_pool, control, http) -> None:
    r = await http.post("/api/v2/generate", json={"model": "kling-v2-1", "prompt": "a harbour", "size": "16:9", "n": 2})
    assert r.status_code == 200, r.text
    for _ in range(300):
        body = (await http.get(f"/api/v2/generate/{r.json()['id']}")).json()
        if body["status"] != "pending":
            break
        await asyncio.sleep(0.2)
    assert body["status"] == "completed" and len(body["result_urls"]) == 2, body
    assert image_info(httpx.get(body["result_urls"][0]).content)[0] == "webp"
    url = kling_pool.state.host_file(png(640, 640))
    r = await http.post("/v1/images/generations", json={"model": "kling-v1", "prompt": "in watercolour", "image_url": url,
                                                        "size": "1:1", "response_format": "url"})
    assert r.status_code == 200, r.text
    assert image_info(httpx.get(r.json()["data"][0]["url"]).content) == ("png", 1024, 1024)
    first, second = (t["body"] for t in tasks(control))
    assert (first["model_name"], first["aspect_ratio"], first["n"]) == ("kling-v2-1", "16:9", 2)
    assert second["model_name"] == "kling-v1" and second["image"].startswith("<image ") and "image_reference" not in second
    r = await http.post("/api/v2/generate", json={"model": "kolors-virtual-try-on-v1", "prompt": "a shirt"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model", r.text


async def test_image_to_image_through_openai_edits(kling_pool, control, http) -> None:
    files = {"image": ("ref.png", png(500, 400), "image/png")}
    r = await http.post("/v1/images/edits", data={"model": "kling-v2", "prompt": "as a mosaic", "size": "4:3"}, files=files)
    assert r.status_code == 200, r.text
    assert image_info(httpx.get(r.json()["data"][0]["url"]).content) == ("png", 1152, 864)
    [task] = tasks(control)
    assert (task["body"]["aspect_ratio"], task["body"]["image"].startswith("<image ")) == ("4:3", True)
    out = io.BytesIO()
    Image.new("RGB", (400, 400)).save(out, "WEBP")
    webp = {"image": ("ref.webp", out.getvalue(), "image/webp")}
    r = await http.post("/v1/images/edits", data={"model": "kling-v2", "prompt": "x"}, files=webp)
    assert r.status_code == 400 and r.json()["error"]["param"] == "image", r.text
    assert "png or jpeg" in r.json()["error"]["message"]

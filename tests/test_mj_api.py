"""The Midjourney proxy task API end to end.

The first tests run on any mesh (tasks are generations, so a pixelmesh-sketch generation
reads as a task). The `midjourney` ones need the mesh to serve the catalog's `midjourney`
model: they start a midjourney worker against the trueai-flavour proxy emulator.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import secrets

import httpx
import pytest
from minio import Minio
from PIL import Image

from tests.emulators import midjourney as mj_emulator
from tests.emulators.harness import EmulatorServer
from tests.support.polling import wait_finished
from tests.support.ports import free_port
from tests.support.provider_jobs import Control
from tests.support.provider_mesh import require_route, start_worker
from tests.support.webhooks import receiver, verify


def data_uri(color: tuple[int, int, int], fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


async def fetch(http: httpx.AsyncClient, task_id: str) -> dict:
    r = await http.get(f"/mj/task/{task_id}/fetch")
    assert r.status_code == 200, r.text
    return r.json()


async def wait_task(http: httpx.AsyncClient, task_id: str, timeout: float = 120.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        task = await fetch(http, task_id)
        if task["status"] in ("SUCCESS", "FAILURE") or asyncio.get_running_loop().time() > deadline:
            return task
        await asyncio.sleep(0.2)


async def submitted(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["code"] == 1 and body["description"] == "Submit success", body
    return body["result"]


# ---- on any mesh ------------------------------------------------------------------------


async def test_a_generation_reads_as_a_task(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": "a task", "size": "512x512", "seed": 3})
    gid = r.json()["id"]
    await wait_finished(http, gid)
    task = await fetch(http, gid)
    assert (task["id"], task["action"], task["status"], task["progress"]) == (gid, "IMAGINE", "SUCCESS", "100%")
    assert (task["prompt"], task["description"], task["failReason"], task["seed"]) == ("a task", "/imagine a task", None, "3")
    assert task["submitTime"] <= task["startTime"] <= task["finishTime"]
    async with httpx.AsyncClient() as anonymous:
        image = await anonymous.get(task["imageUrl"])
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size == (512, 512)


async def test_list_by_condition_returns_the_known_tasks(http: httpx.AsyncClient) -> None:
    ids = []
    for prompt in ("first", "second"):
        ids.append((await http.post("/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": prompt, "size": "256x256"})).json()["id"])
    for gid in ids:
        await wait_finished(http, gid)
    r = await http.post("/mj/task/list-by-condition", json={"ids": [ids[1], "gen_01ARZ3NDEKTSV4RRFFQ69G5FAV", ids[0]]})
    assert r.status_code == 200
    assert [t["id"] for t in r.json()] == [ids[1], ids[0]]
    assert all(t["status"] == "SUCCESS" and t["imageUrl"] for t in r.json())
    assert (await http.post("/mj/task/list-by-condition", json={})).json() == []


async def test_cancel_a_task(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": "stop", "size": "1792x1024", "n": 4})
    gid = r.json()["id"]
    r = await http.post(f"/mj/task/{gid}/cancel")
    assert r.status_code == 200 and r.json()["code"] == 1, r.text
    task = await fetch(http, gid)
    assert (task["status"], task["progress"], task["imageUrl"]) == ("FAILURE", "", None)
    assert "ancel" in task["failReason"]
    again = await http.post(f"/mj/task/{gid}/cancel")
    assert again.status_code == 200 and again.json()["code"] == 4


@pytest.mark.parametrize(
    ("path", "payload", "param"),
    [
        ("/mj/submit/imagine", {"prompt": "  "}, "prompt"),
        ("/mj/submit/imagine", {"prompt": "x", "botType": "DALLE"}, "botType"),
        ("/mj/submit/imagine", {"prompt": "x", "base64Array": ["data:image/png;base64,@@"]}, "base64Array[0]"),
        ("/mj/submit/imagine", {"prompt": "x", "notifyHook": "ftp://x"}, "notifyHook"),
        ("/mj/submit/blend", {"base64Array": [data_uri((1, 2, 3))]}, "base64Array"),
        ("/mj/submit/blend", {"base64Array": [data_uri((1, 2, 3))] * 2, "dimensions": "WIDE"}, "dimensions"),
        ("/mj/submit/blend", {"base64Array": [data_uri((1, 2, 3)), "data:image/png;base64,bm90IGFuIGltYWdl"]}, "base64Array[1]"),
        ("/mj/submit/describe", {}, "base64"),
        ("/mj/submit/change", {"action": "UPSCALE", "index": 1}, "taskId"),
        ("/mj/submit/simple-change", {"content": "nonsense"}, "content"),
        ("/mj/submit/action", {"taskId": ""}, "taskId"),
    ],
)
async def test_bad_submits_are_code_4(http: httpx.AsyncClient, path: str, payload: dict, param: str) -> None:
    r = await http.post(path, json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["code"] == 4 and body["result"] is None and body["description"], body
    assert body["properties"]["param"] == param


async def test_buttons_on_an_unknown_task_are_404_code_3(http: httpx.AsyncClient) -> None:
    for path, payload in (
        ("/mj/submit/action", {"taskId": "gen_01ARZ3NDEKTSV4RRFFQ69G5FAV", "customId": "MJ::JOB::upsample::1::h"}),
        ("/mj/submit/change", {"taskId": "gen_01ARZ3NDEKTSV4RRFFQ69G5FAV", "action": "UPSCALE", "index": 1}),
        ("/mj/submit/simple-change", {"content": "gen_01ARZ3NDEKTSV4RRFFQ69G5FAV U1"}),
    ):
        r = await http.post(path, json=payload)
        assert r.status_code == 404 and r.json()["code"] == 3, r.text
    assert (await http.get("/mj/task/gen_01ARZ3NDEKTSV4RRFFQ69G5FAV/fetch")).status_code == 404


async def test_input_images_are_stored_before_queuing(mesh) -> None:
    from edge.generations import Generations
    from edge.mesh import Caller, Mesh
    from edge.mj import decode_inputs
    from edge.settings import EdgeSettings
    from pixelmesh.common.v1 import generation_pb2 as gen

    addrs = {f"{s}_addr": mesh.addr(s) for s in ("routing", "pricing", "status", "storage")}
    client = Mesh(EdgeSettings(**addrs))
    try:
        png, jpeg = data_uri((9, 9, 9)), data_uri((200, 100, 0), "JPEG")
        uploads = decode_inputs([png, jpeg], "base64Array")
        stored = await Generations(client).store_inputs(Caller("acct_dev", "key_t", "pro", "days-7"), uploads)
        assert [(i.mime_type, i.role) for i in stored] == [("image/png", "image"), ("image/jpeg", "image")]
        upload = stored[0].object_key.split("/")[2]
        assert upload.startswith("upl_")
        assert [i.object_key for i in stored] == [f"days-7/uploads/{upload}/0.png", f"days-7/uploads/{upload}/1.jpg"]
        for uri, ref in zip((png, jpeg), stored, strict=True):
            assert await client.image_b64(gen.ImageRef(object_key=ref.object_key)) == uri.split(",", 1)[1]
    finally:
        await client.close()


def uploaded_objects(mesh) -> set[str]:
    """Every stored input upload (`<retention>/uploads/<upload id>/<n>.<ext>`) in the bucket."""
    store = Minio(f"127.0.0.1:{mesh.ports['MINIO_PORT']}", access_key=mesh.ports["MINIO_ROOT_USER"],
                  secret_key=mesh.ports["MINIO_ROOT_PASSWORD"], secure=False)
    return {o.object_name for o in store.list_objects("pixelmesh-images", recursive=True) if "/uploads/" in o.object_name}


@pytest.mark.parametrize(
    ("path", "payload", "param"),
    [
        # Routing refuses a sixth image prompt; the images were valid, so only its dry run can refuse them.
        ("/mj/submit/imagine", {"prompt": "a fox", "base64Array": [data_uri((1, 2, 3))] * 6}, "image"),
        ("/mj/submit/blend", {"base64Array": [data_uri((1, 2, 3)), "data:image/png;base64,bm90IGFuIGltYWdl"]}, "base64Array[1]"),
    ],
)
async def test_a_refused_submit_with_base64_inputs_stores_nothing(mesh, http: httpx.AsyncClient, path: str,
                                                                  payload: dict, param: str) -> None:
    before = uploaded_objects(mesh)
    r = await http.post(path, json=payload)
    body = r.json()
    assert r.status_code == 200 and body["code"] == 4 and body["properties"]["param"] == param, body
    assert uploaded_objects(mesh) == before, "a refused request left its inputs in storage"


# ---- with the midjourney worker ---------------------------------------------------------


@pytest.fixture(scope="module")
def midjourney(mesh):
    """A midjourney pool in the mesh: the trueai-flavour proxy emulator and a worker for it."""
    require_route(mesh, "midjourney")
    key = "mj-" + secrets.token_hex(8)
    server = EmulatorServer("midjourney", free_port(), api_key=key,
                            create_app=functools.partial(mj_emulator.create_app, flavor="trueai")).start()
    instance = start_worker(mesh, "midjourney", MIDJOURNEY_API_KEY=key, MIDJOURNEY_BASE_URL=server.url,
                            MIDJOURNEY_FLAVOR="trueai", WORKER_INPUT_URLS_ALLOW_PRIVATE="true")
    yield server
    mesh.stop(instance)
    server.stop()


async def test_imagine_then_buttons(http: httpx.AsyncClient, midjourney: None) -> None:
    task_id = await submitted(await http.post("/mj/submit/imagine", json={"prompt": "a red fox --ar 2:3", "state": "fox-1"}))
    grid = await wait_task(http, task_id)
    assert (grid["status"], grid["action"], grid["state"], grid["progress"]) == ("SUCCESS", "IMAGINE", "fox-1", "100%")
    assert grid["imageUrl"] and grid["buttons"], grid
    upsample = next(b for b in grid["buttons"] if b["customId"].startswith("MJ::JOB::upsample::1::"))

    up_id = await submitted(await http.post("/mj/submit/action", json={"taskId": task_id, "customId": upsample["customId"]}))
    up = await wait_task(http, up_id)
    assert (up["status"], up["action"], up["parentId"], up["description"]) == ("SUCCESS", "UPSCALE", task_id, f"/up {task_id} U1")
    assert up["imageUrl"]

    var_id = await submitted(await http.post("/mj/submit/change", json={"taskId": task_id, "action": "VARIATION", "index": 2}))
    var = await wait_task(http, var_id)
    assert (var["status"], var["action"]) == ("SUCCESS", "VARIATION")
    v2 = (await http.get(f"/api/v2/generate/{var_id}")).json()
    assert v2["kind"] == "action" and v2["parent_generation_id"] == task_id and v2["status"] == "completed"


async def test_imagine_with_image_prompts_and_version_7(http: httpx.AsyncClient, midjourney: EmulatorServer) -> None:
    payload = {"prompt": "a red fox in snow --v 7", "base64Array": [data_uri((255, 0, 0)), data_uri((0, 0, 255), "JPEG")]}
    task_id = await submitted(await http.post("/mj/submit/imagine", json=payload))
    task = await wait_task(http, task_id)
    assert (task["status"], task["action"]) == ("SUCCESS", "IMAGINE"), task
    sent = [t for t in Control(midjourney.url).get("/_emulator/midjourney/tasks")["tasks"] if t["body"].get("state") == task_id]
    assert len(sent[0]["body"]["base64Array"]) == 2 and sent[0]["body"]["prompt"].startswith("a red fox in snow --v 7")


async def test_midjourney_v7_on_the_v2_api_with_an_omni_reference_and_draft(
    http: httpx.AsyncClient, midjourney: EmulatorServer
) -> None:
    reference = midjourney.state.host_file(base64.b64decode(data_uri((90, 90, 200)).partition(",")[2]))
    r = await http.post("/api/v2/generate", json={
        "model": "midjourney-v7", "prompt": "a portrait of the same knight", "image_url": reference,
        "provider_options": {"draft": True, "omni_weight": 300},
    }, headers={"Prefer": ""})  # no preference: the model's own bound
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending"  # Midjourney answers pending first, as the v2 API's docs say
    done = await wait_finished(http, r.json()["id"])
    assert done["status"] == "completed" and done["model_slug"] == "midjourney-v7", done
    [sent] = [t for t in Control(midjourney.url).get("/_emulator/midjourney/tasks")["tasks"] if t["body"].get("state") == done["id"]]
    assert f"--oref {reference} --draft --ow 300" in sent["body"]["prompt"] and sent["body"]["prompt"].endswith("--v 7")


async def test_blend_and_describe(http: httpx.AsyncClient, midjourney: None) -> None:
    blend_id = await submitted(
        await http.post("/mj/submit/blend", json={"base64Array": [data_uri((255, 0, 0)), data_uri((0, 0, 255), "JPEG")], "dimensions": "LANDSCAPE"})
    )
    blend = await wait_task(http, blend_id)
    assert (blend["status"], blend["action"], blend["description"]) == ("SUCCESS", "BLEND", f"/blend {blend_id} 2")
    assert blend["imageUrl"]

    describe_id = await submitted(await http.post("/mj/submit/describe", json={"base64": data_uri((0, 200, 0))}))
    described = await wait_task(http, describe_id)
    assert (described["status"], described["action"]) == ("SUCCESS", "DESCRIBE")
    assert described["properties"]["finalPrompt"]
    assert (await http.get(f"/api/v2/generate/{describe_id}")).json()["descriptions"]


async def test_notify_hook_gets_the_task(http: httpx.AsyncClient, midjourney: None) -> None:
    secret = (await http.get("/api/v2/webhooks/secret")).json()["secret"]
    async with receiver() as rec:
        task_id = await submitted(await http.post("/mj/submit/imagine", json={"prompt": "an owl", "notifyHook": rec.url}))
        await rec.wait_calls(1, timeout=120)
    headers, body = rec.calls[0]
    verify(secret, headers, body)
    task = json.loads(body)
    assert (task["id"], task["status"], task["action"]) == (task_id, "SUCCESS", "IMAGINE")
    assert task["properties"]["notifyHook"] == rec.url


async def test_an_idempotent_retry_is_code_21(http: httpx.AsyncClient, midjourney: None) -> None:
    key = {"Idempotency-Key": "mj-" + secrets.token_hex(8)}
    task_id = await submitted(await http.post("/mj/submit/imagine", json={"prompt": "a heron"}, headers=key))
    await wait_task(http, task_id)
    again = (await http.post("/mj/submit/imagine", json={"prompt": "a heron"}, headers=key)).json()
    assert (again["code"], again["result"], again["properties"]["status"]) == (21, task_id, "SUCCESS")

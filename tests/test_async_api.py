"""The aggregators' submit-then-poll API (the v2 API)."""

from __future__ import annotations

import io
import re

import httpx
from PIL import Image

from tests.support.polling import wait_finished


async def test_submit_returns_pending_then_completes(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/api/v2/generate",
        json={"model": "pixelmesh-sketch", "prompt": "a lighthouse at dusk", "size": "768x1344", "seed": 42},
    )
    assert r.status_code == 200, r.text
    submitted = r.json()
    assert submitted["status"] == "pending"
    assert submitted["model_slug"] == "pixelmesh-sketch"
    assert isinstance(submitted["eta_seconds"], int)
    assert submitted["seed"] == 42
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", submitted["created_at"])

    done = await wait_finished(http, submitted["id"])
    assert done["status"] == "completed", done
    assert done["id"] == submitted["id"]
    assert done["tokens_spent"] == 1
    assert done["result_metadata"]["width"] == 768 and done["result_metadata"]["height"] == 1344
    assert done["seed"] == 42
    async with httpx.AsyncClient() as anonymous:  # a presigned URL needs no (and takes no) API key
        image = await anonymous.get(done["result_url"])
    assert image.status_code == 200
    decoded = Image.open(io.BytesIO(image.content))
    assert (decoded.format, decoded.size) == ("WEBP", (768, 1344)), "the aggregator API defaults to webp"


async def test_a_fast_model_answers_completed_in_one_call_as_seed_000s_sample_expects(edge_url, api_key) -> None:
    # Seed 000's Python sample: post, then print data['result_url'] at once.
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {api_key}"}, timeout=90) as client:
        r = await client.post(f"{edge_url}/api/v2/generate",
                              json={"model": "pixelmesh-sketch", "prompt": "a lighthouse", "size": "256x256"})
    assert r.status_code == 200, r.text
    data = r.json()
    assert (data["status"], data["eta_seconds"]) == ("completed", None), data
    assert data["result_url"] and data["tokens_spent"] == 1
    assert "preference-applied" not in r.headers
    async with httpx.AsyncClient() as anonymous:
        assert (await anonymous.get(data["result_url"])).status_code == 200


async def test_prefer_bounds_the_wait_or_answers_at_once(edge_url, api_key) -> None:
    slow = {"model": "pixelmesh-sketch", "prompt": "a slow canyon", "size": "1792x1024", "n": 4, "quality": "hd"}
    async with httpx.AsyncClient(base_url=edge_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=90) as client:
        r = await client.post("/api/v2/generate", json=slow, headers={"Prefer": "respond-async"})
        assert (r.json()["status"], r.headers["preference-applied"]) == ("pending", "respond-async")
        assert isinstance(r.json()["eta_seconds"], int) and r.json()["result_url"] is None
        # A wait shorter than the job: pending after it, with the wait applied.
        r = await client.post("/api/v2/generate", json=slow, headers={"Prefer": "wait=1"})
        assert (r.json()["status"], r.headers["preference-applied"]) == ("pending", "wait=1"), r.json()
        # A wait longer than the job: the result. More than the edge's most is cut to it.
        r = await client.post("/api/v2/generate", json=slow, headers={"Prefer": "wait=600"})
        assert (r.json()["status"], r.headers["preference-applied"]) == ("completed", "wait=60"), r.json()
        assert len(r.json()["result_urls"]) == 4
        bad = await client.post("/api/v2/generate", json=slow, headers={"Prefer": "wait=soon"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Prefer", bad.text


async def test_seed_is_reported_when_not_given(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": "x", "size": "256x256"})
    body = await wait_finished(http, r.json()["id"])
    assert body["status"] == "completed"
    assert isinstance(body["seed"], int)


async def test_unknown_generation_is_404(http: httpx.AsyncClient) -> None:
    r = await http.get("/api/v2/generate/gen_01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


async def test_status_rebuilds_from_the_events_topic_after_a_restart(mesh, http: httpx.AsyncClient) -> None:
    r = await http.post("/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": "remember me", "size": "256x256"})
    before = await wait_finished(http, r.json()["id"])
    assert before["status"] == "completed"
    mesh.stop("status")
    mesh.start("status")
    mesh.wait_serving(mesh.ports["STATUS_GRPC_PORT"], "status")
    after = (await http.get(f"/api/v2/generate/{before['id']}")).json()
    assert after["status"] == "completed"
    assert after["result_metadata"]["images"][0]["sha256"] == before["result_metadata"]["images"][0]["sha256"]

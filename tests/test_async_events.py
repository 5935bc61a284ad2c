"""The async job API's progress stream (SSE) and the full v2 generation object."""

from __future__ import annotations

import httpx

from tests.support import sse
from tests.support.polling import wait_finished

SLOW = {"model": "pixelmesh-sketch", "prompt": "a slow valley of many images", "size": "1024x1024", "n": 4}


async def submit(http: httpx.AsyncClient, payload: dict) -> dict:
    r = await http.post("/api/v2/generate", json=payload)
    assert r.status_code == 200, r.text
    return r.json()


async def test_events_stream_every_change_and_end_with_the_images(http: httpx.AsyncClient) -> None:
    submitted = await submit(http, SLOW)
    seen: list[sse.Event] = []
    async with http.stream("GET", f"/api/v2/generate/{submitted['id']}/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for event in sse.events(r):
            seen.append(event)
    names = [e.event for e in seen]
    assert names[-1] == "completed", names
    assert set(names) <= {"queued", "running", "completed"}, names
    assert "running" in names, "a four-image job reports progress while it runs"
    versions = [int(e.id.split("-")[0]) for e in seen]
    assert versions == sorted(set(versions)), "one event per change, in order, no repeats"
    running = [e.json()["progress"] for e in seen if e.event == "running"]
    assert running == sorted(running) and running[-1] >= 75.0, running
    assert all(e.json()["status"] == "pending" for e in seen[:-1])
    done = seen[-1].json()
    assert done["id"] == submitted["id"] and done["status"] == "completed" and done["state"] == "completed"
    assert len(done["result_urls"]) == 4 and done["result_url"] == done["result_urls"][0]
    assert [i["url"] for i in done["result_metadata"]["images"]] == done["result_urls"]


async def test_reconnecting_with_last_event_id_repeats_nothing(http: httpx.AsyncClient) -> None:
    submitted = await submit(http, SLOW)
    url = f"/api/v2/generate/{submitted['id']}/events"
    async with http.stream("GET", url) as r:
        first = await anext(sse.events(r))  # then drop the connection
    async with http.stream("GET", url, headers={"Last-Event-ID": first.id}) as r:
        rest = [e async for e in sse.events(r)]
    assert rest, "the stream goes on after a reconnect"
    assert rest[-1].event == "completed"
    first_version = int(first.id.split("-")[0])
    assert all(int(e.id.split("-")[0]) > first_version for e in rest), [first.id] + [e.id for e in rest]
    assert len({e.id for e in rest}) == len(rest)
    # Once the client saw the end, a reconnect gets 204 (EventSource stops) and no event.
    r = await http.get(url, headers={"Last-Event-ID": rest[-1].id})
    assert r.status_code == 204 and r.content == b""


async def test_events_of_a_finished_generation_are_its_end(http: httpx.AsyncClient) -> None:
    submitted = await submit(http, {"model": "pixelmesh-sketch", "prompt": "quick", "size": "256x256"})
    await wait_finished(http, submitted["id"])
    async with http.stream("GET", f"/api/v2/generate/{submitted['id']}/events") as r:
        names = [e.event async for e in sse.events(r)]
    assert names == ["completed"]


async def test_events_of_an_unknown_generation_are_404(http: httpx.AsyncClient) -> None:
    r = await http.get("/api/v2/generate/gen_01ARZ3NDEKTSV4RRFFQ69G5FAV/events")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


async def test_the_v2_object_has_every_seed_field(http: httpx.AsyncClient) -> None:
    payload = {
        "model": "pixelmesh-sketch",
        "prompt": "a harbour at noon",
        "negative_prompt": "fog",
        "size": "768x1344",
        "format": "png",
        "quality": "hd",
        "seed": 7,
    }
    submitted = await submit(http, payload)
    for field in ("id", "status", "state", "model_slug", "eta_seconds", "created_at", "seed", "progress", "result_url", "tokens_spent"):
        assert field in submitted, field
    assert submitted["state"] in ("queued", "running")
    done = await wait_finished(http, submitted["id"])
    assert done["status"] == "completed" and done["state"] == "completed"
    assert done["eta_seconds"] is None and done["progress"] == 100.0
    assert (done["prompt"], done["negative_prompt"], done["size"], done["format"], done["quality"], done["seed"]) == (
        "a harbour at noon", "fog", "768x1344", "png", "hd", 7,
    )
    assert done["result_metadata"]["width"] == 768 and done["result_metadata"]["height"] == 1344
    assert done["completed_at"] >= done["created_at"]
    assert done["tokens_spent"] >= 1 and done["cost_usd"] > 0
    perf = done["perf"]  # the perf API's block, on the async object too
    assert perf["request_id"] == done["id"] and perf["model_used"] == "pixelmesh-sketch"
    assert perf["size"] == "768x1344" and perf["latency_ms"] >= 0
    assert done["error"] is None and done["webhook_deliveries"] == [] and done["callback_url"] is None

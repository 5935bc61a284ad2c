"""A worker killed in the middle of jobs: every generation still completes, exactly once."""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict

import httpx
from aiokafka import AIOKafkaConsumer
from minio import Minio

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from tests.support.polling import wait_finished

JOBS = 16


async def events_by_generation(bootstrap: str, ids: set[str]) -> dict[str, list[gen.Generation]]:
    consumer = AIOKafkaConsumer("pixelmesh.generation.events", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: dict[str, list[gen.Generation]] = defaultdict(list)
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1500)
            if not batch:
                break
            for records in batch.values():
                for r in records:
                    g = events_pb2.GenerationEvent.FromString(r.value).generation
                    if g.id in ids:
                        out[g.id].append(g)
    finally:
        await consumer.stop()
    return out


async def test_killed_worker_jobs_complete_exactly_once(mesh, http: httpx.AsyncClient) -> None:
    submitted = []
    for i in range(JOBS):
        r = await http.post(
            "/api/v2/generate",
            json={"model": "pixelmesh-sketch", "prompt": f"crash test {i}", "size": "1024x1024", "n": 4, "quality": "hd"},
        )
        assert r.status_code == 200, r.text
        submitted.append(r.json()["id"])

    # Kill -9 once the worker is busy: some jobs done, some running, most not started.
    for _ in range(600):
        states = [(await http.get(f"/api/v2/generate/{i}")).json() for i in submitted[:3]]
        if any(s["status"] == "completed" for s in states):
            break
        await asyncio.sleep(0.05)
    mesh.stop("worker", sig=signal.SIGKILL)
    statuses_at_kill = [(await http.get(f"/api/v2/generate/{i}")).json()["status"] for i in submitted]
    assert "pending" in statuses_at_kill, "the kill must land while jobs are unfinished"

    mesh.start("worker")
    mesh.wait_serving(mesh.ports["WORKER_GRPC_PORT"], "worker")

    final = {gid: await wait_finished(http, gid) for gid in submitted}
    assert {b["status"] for b in final.values()} == {"completed"}, final

    # Exactly once: one stored set of n images per generation, and every terminal event of
    # a generation (a redone job may emit its result again) carries the very same images.
    store = Minio(
        f"127.0.0.1:{mesh.ports['MINIO_PORT']}",
        access_key=mesh.ports["MINIO_ROOT_USER"],
        secret_key=mesh.ports["MINIO_ROOT_PASSWORD"],
        secure=False,
    )
    events = await events_by_generation(f"127.0.0.1:{mesh.ports['KAFKA_PORT']}", set(submitted))
    for gid in submitted:
        objects = list(store.list_objects("pixelmesh-images", prefix=f"days-90/{gid}/", recursive=True))
        assert len(objects) == 4, (gid, [o.object_name for o in objects])
        terminal = [g for g in events[gid] if g.state in (gen.GENERATION_STATE_SUCCEEDED, gen.GENERATION_STATE_FAILED)]
        assert terminal and all(g.state == gen.GENERATION_STATE_SUCCEEDED for g in terminal)
        results = {tuple((i.object_key, i.sha256) for i in g.images) for g in terminal}
        assert len(results) == 1, f"{gid} ended with different results: {results}"
        assert final[gid]["result_metadata"]["images"][0]["sha256"] == terminal[0].images[0].sha256


async def test_sigterm_finishes_or_hands_back_in_flight_jobs(mesh, http: httpx.AsyncClient) -> None:
    """A graceful stop (rolling update) loses nothing: in-flight jobs finish or are redone."""
    submitted = []
    for i in range(8):
        r = await http.post(
            "/api/v2/generate",
            json={"model": "pixelmesh-sketch", "prompt": f"sigterm {i}", "size": "1024x1024", "n": 4, "quality": "hd"},
        )
        submitted.append(r.json()["id"])
    for _ in range(600):
        if (await http.get(f"/api/v2/generate/{submitted[0]}")).json().get("progress", 0) > 0:
            break
        await asyncio.sleep(0.05)
    mesh.stop("worker", sig=signal.SIGTERM, timeout=30)
    mesh.start("worker")
    mesh.wait_serving(mesh.ports["WORKER_GRPC_PORT"], "worker")
    for gid in submitted:
        body = await wait_finished(http, gid)
        assert body["status"] == "completed", body
    log = mesh.log_file("worker").read_text()
    assert '"event": "stopped"' in log, "the worker shut down gracefully, not killed after the timeout"

"""Poison messages go to the dead-letter topic, and the worker keeps going."""

from __future__ import annotations

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from tests.support.polling import wait_finished

REQUESTS = "pixelmesh.generation.requests.local"


async def test_poison_jobs_are_dead_lettered_and_work_continues(mesh, http: httpx.AsyncClient) -> None:
    bootstrap = f"127.0.0.1:{mesh.ports['KAFKA_PORT']}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        # undecodable bytes, and a well-formed message that is not a valid job
        await producer.send_and_wait(REQUESTS, b"\x0a\xff\xff", key=b"poison-1")
        empty = events_pb2.GenerationJob(generation=gen.Generation(id="gen_bogus")).SerializeToString()
        await producer.send_and_wait(REQUESTS, empty, key=b"poison-2")
    finally:
        await producer.stop()

    r = await http.post("/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": "after poison", "size": "256x256"})
    assert (await wait_finished(http, r.json()["id"]))["status"] == "completed"

    consumer = AIOKafkaConsumer(REQUESTS + ".dlq", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        seen: dict[bytes, dict[str, bytes]] = {}
        for _ in range(20):
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for rec in records:
                    seen[rec.key] = dict(rec.headers)
            if {b"poison-1", b"poison-2"} <= set(seen):
                break
    finally:
        await consumer.stop()
    assert {b"poison-1", b"poison-2"} <= set(seen)
    assert seen[b"poison-1"]["pixelmesh-original-topic"] == REQUESTS.encode()
    assert b"GenerationJob" in seen[b"poison-1"]["pixelmesh-error"]
    assert b"QUEUED" in seen[b"poison-2"]["pixelmesh-error"]


async def test_worker_metrics_count_outcomes(mesh, http: httpx.AsyncClient) -> None:
    await http.post("/v1/images/generations", json={"model": "pixelmesh-sketch", "prompt": "m", "size": "256x256"})
    async with httpx.AsyncClient() as c:
        text = (await c.get(f"http://127.0.0.1:{mesh.ports['WORKER_METRICS_PORT']}/metrics")).text
    assert 'pixelmesh_worker_generations_total{code="",outcome="succeeded",provider="local"}' in text

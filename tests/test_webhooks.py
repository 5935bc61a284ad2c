"""Webhooks: a signed POST on every terminal state, retried with backoff, every attempt visible."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from tests.support.polling import wait_finished
from tests.support.webhooks import receiver, verify

EVENTS = "pixelmesh.generation.events"


async def deliveries(http: httpx.AsyncClient, gid: str, count: int, timeout: float = 30.0) -> list[dict]:
    """The generation's recorded attempts, once there are `count` of them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = (await http.get(f"/api/v2/generate/{gid}")).json()["webhook_deliveries"]
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_signed_webhook_retried_until_delivered(http: httpx.AsyncClient) -> None:
    secret = (await http.get("/api/v2/webhooks/secret")).json()["secret"]
    async with receiver(failures=2) as rec:
        r = await http.post(
            "/api/v2/generate",
            json={"model": "pixelmesh-sketch", "prompt": "tell me when done", "size": "256x256", "callback_url": rec.url},
        )
        gid = r.json()["id"]
        assert r.json()["callback_url"] == rec.url
        await rec.wait_calls(3)
        attempts = await deliveries(http, gid, 3)
        await asyncio.sleep(3)  # nothing after the delivered attempt
        assert len(rec.calls) == 3

    for number, (headers, body) in enumerate(rec.calls, start=1):
        verify(secret, headers, body)
        assert headers["x-pixelmesh-attempt"] == str(number)
        assert headers["x-pixelmesh-delivery"] == f"{gid}.completed"
        assert headers["content-type"] == "application/json"
    sent = json.loads(rec.calls[-1][1])
    polled = (await http.get(f"/api/v2/generate/{gid}")).json()
    assert sent["id"] == gid and sent["status"] == "completed" and sent["result_url"]
    assert set(sent) == set(polled), "the body is the GET /api/v2/generate/{id} object"

    assert [(a["attempt"], a["status_code"], a["delivered"], a["state"]) for a in attempts] == [
        (1, 500, False, "completed"),
        (2, 500, False, "completed"),
        (3, 200, True, "completed"),
    ]
    assert attempts[0]["error"] and attempts[2]["error"] is None
    assert attempts[0]["time"] <= attempts[1]["time"] <= attempts[2]["time"]
    assert polled["status"] == "completed" and polled["result_url"], "annotations never change the result"


async def test_a_redelivered_terminal_event_is_not_delivered_again(mesh, http: httpx.AsyncClient) -> None:
    async with receiver() as rec:
        r = await http.post(
            "/api/v2/generate",
            json={"model": "pixelmesh-sketch", "prompt": "once only", "size": "256x256", "callback_url": rec.url},
        )
        gid = r.json()["id"]
        await rec.wait_calls(1)
        assert [a["delivered"] for a in await deliveries(http, gid, 1)] == [True]

        # Replay the worker's terminal event, as Kafka does after a consumer crash.
        bootstrap = f"127.0.0.1:{mesh.ports['KAFKA_PORT']}"
        terminal = await terminal_event(bootstrap, gid)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(EVENTS, terminal.SerializeToString(), key=gid.encode())
        finally:
            await producer.stop()
        await asyncio.sleep(4)
        assert len(rec.calls) == 1
    assert len((await http.get(f"/api/v2/generate/{gid}")).json()["webhook_deliveries"]) == 1


async def terminal_event(bootstrap: str, gid: str) -> events_pb2.GenerationEvent:
    """The first SUCCEEDED event of the generation on the events topic."""
    consumer = AIOKafkaConsumer(EVENTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        for _ in range(60):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for rec in records:
                    if rec.key != gid.encode():
                        continue
                    event = events_pb2.GenerationEvent.FromString(rec.value)
                    if event.generation.state == gen.GENERATION_STATE_SUCCEEDED and not event.generation.webhook_deliveries:
                        return event
    finally:
        await consumer.stop()
    raise AssertionError(f"no terminal event of {gid} on the events topic")


async def test_a_cancelled_generation_is_announced_too(http: httpx.AsyncClient) -> None:
    secret = (await http.get("/api/v2/webhooks/secret")).json()["secret"]
    async with receiver() as rec:
        r = await http.post(
            "/api/v2/generate",
            json={"model": "pixelmesh-sketch", "prompt": "never mind", "size": "1792x1024", "n": 4, "callback_url": rec.url},
        )
        gid = r.json()["id"]
        assert (await http.post(f"/api/v2/generate/{gid}/cancel")).status_code == 200
        await rec.wait_calls(1)
        await asyncio.sleep(3)  # the worker's late result must not be announced
        assert len(rec.calls) == 1
    headers, body = rec.calls[0]
    verify(secret, headers, body)
    sent = json.loads(body)
    assert (sent["id"], sent["status"], sent["state"], sent["error"]["code"]) == (gid, "failed", "cancelled", "cancelled")
    assert headers["x-pixelmesh-delivery"] == f"{gid}.cancelled"
    assert [a["state"] for a in await deliveries(http, gid, 1)] == ["cancelled"]


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "not a url", "http://", "/relative/path", "https://exa mple.com"])
async def test_bad_callback_urls_are_400(http: httpx.AsyncClient, url: str) -> None:
    r = await http.post("/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": "x", "callback_url": url})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "callback_url" and err["code"] == "invalid_request"


async def test_no_callback_no_webhook(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": "quiet", "size": "256x256"})
    done = await wait_finished(http, r.json()["id"])
    await asyncio.sleep(1)
    assert (await http.get(f"/api/v2/generate/{done['id']}")).json()["webhook_deliveries"] == []


async def restart_status(mesh, http: httpx.AsyncClient, gid: str, sig: int = signal.SIGTERM, **overrides: str) -> None:
    """Restart the status service (killed with `sig`), then wait until the edge reaches it again."""
    mesh.stop("status", sig=sig)
    mesh.start("status", **overrides)
    mesh.wait_serving(mesh.ports["STATUS_GRPC_PORT"], "status")
    for _ in range(150):  # the edge's channel reconnects with its own backoff
        if (await http.get(f"/api/v2/generate/{gid}")).status_code == 200:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the edge does not reach the restarted status service")


async def test_retries_survive_a_crash_and_stop_at_the_window(mesh, http: httpx.AsyncClient) -> None:
    window = {"WEBHOOK_RETRY_SECONDS": "40"}
    anchor = (await http.post("/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": "anchor", "size": "256x256"})).json()["id"]
    await wait_finished(http, anchor)
    await restart_status(mesh, http, anchor, **window)
    try:
        async with receiver(failures=10_000) as rec:
            r = await http.post(
                "/api/v2/generate",
                json={"model": "pixelmesh-sketch", "prompt": "nobody home", "size": "256x256", "callback_url": rec.url},
            )
            gid = r.json()["id"]
            await rec.wait_calls(2)
            # Crash mid-retries: the terminal event was never committed by the webhook group,
            # so it is redelivered; the recorded attempts say where to go on.
            await restart_status(mesh, http, anchor, sig=signal.SIGKILL, **window)
            ended = (await http.get(f"/api/v2/generate/{gid}")).json()["completed_at"]
            quiet_since, count = asyncio.get_running_loop().time(), len(rec.calls)
            while asyncio.get_running_loop().time() - quiet_since < 25:  # longer than the capped backoff gaps here
                await asyncio.sleep(0.5)
                if len(rec.calls) != count:
                    quiet_since, count = asyncio.get_running_loop().time(), len(rec.calls)
            calls = list(rec.calls)
    finally:
        await restart_status(mesh, http, anchor)

    numbers = [int(h["x-pixelmesh-attempt"]) for h, _ in calls]
    assert numbers == list(range(1, len(numbers) + 1)), numbers  # resumed, never repeated
    assert len(numbers) >= 3, "retries go on after the crash"
    recorded = await deliveries(http, gid, len(numbers))
    assert [a["attempt"] for a in recorded] == numbers
    assert not any(a["delivered"] for a in recorded) and all(a["status_code"] == 500 for a in recorded)
    assert recorded[-1]["time"] <= _plus(ended, 40), "no attempt after the retry window"
    gaps = [_seconds(b["time"]) - _seconds(a["time"]) for a, b in zip(recorded, recorded[1:])]
    assert gaps[0] >= 1 and all(g >= 1 for g in gaps), gaps  # backoff, never a burst


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").timestamp()


def _plus(iso: str, seconds: float) -> str:
    from datetime import datetime, timedelta

    return (datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ") + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")

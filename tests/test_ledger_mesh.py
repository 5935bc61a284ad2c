"""The ledger through the real mesh: balances held at submit, settled from the events topic."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import grpc
import httpx
import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.routing.v1 import routing_service_pb2, routing_service_pb2_grpc
from tests.support.ledger import admin_client, explain, funded_key, settled
from tests.support.polling import wait_finished


@pytest.fixture(scope="module")
def admin(mesh):  # noqa: ANN001, ANN201
    with admin_client(mesh) as client:
        yield client


def client(edge_url: str, secret: str) -> httpx.AsyncClient:
    """Submits answered at once (`Prefer: respond-async`): these tests look at what is held
    while a job runs."""
    headers = {"Authorization": f"Bearer {secret}", "Prefer": "respond-async"}
    return httpx.AsyncClient(base_url=edge_url, headers=headers, timeout=120)


async def test_fifty_concurrent_requests_against_a_balance_of_ten_images(edge_url, admin) -> None:  # noqa: ANN001
    key = funded_key(admin, "pro", tokens=10)  # pixelmesh-sketch: 1 token an image
    async with client(edge_url, key.secret) as http:
        body = {"model": "pixelmesh-sketch", "prompt": "a coin", "size": "256x256"}
        answers = await asyncio.gather(*(http.post("/api/v2/generate", json=body) for _ in range(50)))
        statuses = Counter(r.status_code for r in answers)
        assert statuses == {200: 10, 402: 40}, [(r.status_code, r.text) for r in answers if r.status_code not in (200, 402)]
        refused = next(r for r in answers if r.status_code == 402).json()["error"]
        assert (refused["type"], refused["code"]) == ("insufficient_quota", "insufficient_balance")
        assert admin.balance(key.account_id).balance.available_tokens == 0
        done = [await wait_finished(http, r.json()["id"]) for r in answers if r.status_code == 200]
    assert {d["status"] for d in done} == {"completed"}
    assert {(d["tokens_spent"], d["cost_usd"]) for d in done} == {(1, 0.01)}
    ledger = await settled(admin, key.account_id)
    assert (ledger.balance.available_tokens, ledger.balance.reserved_tokens) == (0, 0)
    assert min(e.balance_after for e in ledger.entries) == 0  # never below zero
    assert Counter(e.kind for e in ledger.entries) == {"credit": 1, "reserve": 10, "capture": 10}
    explain(ledger)


async def test_a_killed_worker_redoes_the_job_and_it_is_captured_once(mesh, edge_url, admin) -> None:  # noqa: ANN001
    key = funded_key(admin, "pro", tokens=100, max_concurrent=0)
    async with client(edge_url, key.secret) as http:
        ids = []
        for i in range(6):
            r = await http.post(
                "/api/v2/generate",
                json={"model": "pixelmesh-sketch", "prompt": f"ledger crash {i}", "size": "1024x1024", "n": 4, "quality": "hd"},
            )
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
        for _ in range(600):  # kill once a job is under way
            if (await http.get(f"/api/v2/generate/{ids[0]}")).json().get("progress", 0) > 0:
                break
            await asyncio.sleep(0.05)
        mesh.stop("worker", sig=signal.SIGKILL)
        mesh.start("worker")
        mesh.wait_serving(mesh.ports["WORKER_GRPC_PORT"], "worker")
        final = [await wait_finished(http, gid) for gid in ids]
    assert {f["status"] for f in final} == {"completed"}, final
    ledger = await settled(admin, key.account_id)
    per_generation = Counter((e.reference, e.kind) for e in ledger.entries if e.kind != "credit")
    assert per_generation == {**{(g, "reserve"): 1 for g in ids}, **{(g, "capture"): 1 for g in ids}}
    assert ledger.balance.available_tokens == 100 - 6 * 4
    explain(ledger)


async def test_a_job_that_fails_for_good_gives_the_reservation_back(mesh, edge_url, admin) -> None:  # noqa: ANN001
    key = funded_key(admin, "pro", tokens=20)
    mesh.stop("storage")  # the worker cannot store the images: the generation fails
    try:
        async with client(edge_url, key.secret) as http:
            r = await http.post("/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": "lost", "size": "256x256", "n": 3})
            assert r.status_code == 200, r.text
            assert admin.balance(key.account_id).balance.available_tokens == 17  # held while it runs
            final = await wait_finished(http, r.json()["id"])
    finally:
        mesh.start("storage")
        mesh.wait_serving(mesh.ports["STORAGE_GRPC_PORT"], "storage")
    assert final["status"] == "failed" and final["tokens_spent"] == 0, final
    ledger = await settled(admin, key.account_id)
    assert ledger.balance.available_tokens == 20
    assert [e.kind for e in ledger.entries] == ["credit", "reserve", "release"]
    explain(ledger)


async def test_a_retried_submit_with_the_same_idempotency_key_runs_once(mesh, admin) -> None:  # noqa: ANN001
    key = funded_key(admin, "pro", tokens=10)
    request = routing_service_pb2.SubmitGenerationRequest(
        params=gen.GenerationParams(model="pixelmesh-sketch", prompt="once", size="256x256", n=2),
        account_id=key.account_id, api_key_id=key.key_id, retention_class="days-90", idempotency_key="order-42",
    )
    async with grpc.aio.insecure_channel(mesh.addr("routing")) as ch:
        stub = routing_service_pb2_grpc.RoutingServiceStub(ch)
        ops = [await stub.SubmitGeneration(request) for _ in range(3)]
    assert len({op.name for op in ops}) == 1
    first = gen.Generation()
    ops[0].metadata.Unpack(first)
    assert first.cost.tokens == 2
    ledger = await settled(admin, key.account_id)
    assert [e.kind for e in ledger.entries] == ["credit", "reserve", "capture"]
    assert ledger.entries[1].amount_tokens == -2 and ledger.entries[1].reference == first.id  # one reservation of 2
    assert ledger.balance.available_tokens == 8


async def test_a_revoked_key_stops_spending_at_once_and_everything_within_a_second(edge_url, admin) -> None:  # noqa: ANN001
    key = funded_key(admin, "basic", tokens=5)
    async with client(edge_url, key.secret) as http:
        assert (await http.get("/v1/models")).status_code == 200  # the edge remembers the key now
        admin.revoke_key(key.key_id)
        r = await http.post("/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": "no"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        revoked_at = time.monotonic()
        while (r := await http.get("/v1/models")).status_code != 401:  # EDGE_AUTH_CACHE_SECONDS
            assert time.monotonic() - revoked_at < 1.5, "a revoked key still worked after the cache's second"
            await asyncio.sleep(0.05)
        assert r.json()["error"]["code"] == "invalid_api_key"
    assert admin.balance(key.account_id).balance.available_tokens == 5

"""Idempotency-Key: a retried submit returns the same generation, never a second one.

The edge passes the header through to routing (SubmitGenerationRequest.idempotency_key);
routing deduplicates in its own store (routing.idempotency), before pricing reserves anything.
"""

from __future__ import annotations

import secrets

import httpx

from tests.support.polling import wait_finished

PAYLOAD = {"model": "pixelmesh-sketch", "prompt": "the same request twice", "size": "256x256"}


async def test_a_retried_submit_returns_the_same_generation(http: httpx.AsyncClient) -> None:
    key = "retry-" + secrets.token_hex(8)
    first = await http.post("/api/v2/generate", json=PAYLOAD, headers={"Idempotency-Key": key})
    assert first.status_code == 200, first.text
    gid = first.json()["id"]
    done = await wait_finished(http, gid)
    assert done["status"] == "completed"

    again = await http.post("/api/v2/generate", json=PAYLOAD, headers={"Idempotency-Key": key})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == gid, "the retry is the first generation, not a new one"
    retried = await wait_finished(http, gid)
    assert retried["status"] == "completed"
    assert retried["tokens_spent"] == done["tokens_spent"]
    assert [i["sha256"] for i in retried["result_metadata"]["images"]] == [i["sha256"] for i in done["result_metadata"]["images"]]


async def test_a_retry_while_running_joins_the_same_generation(http: httpx.AsyncClient) -> None:
    key = "inflight-" + secrets.token_hex(8)
    payload = {**PAYLOAD, "size": "1024x1024", "n": 2}
    ids = [(await http.post("/api/v2/generate", json=payload, headers={"Idempotency-Key": key})).json()["id"] for _ in range(2)]
    assert ids[0] == ids[1]
    assert (await wait_finished(http, ids[0]))["status"] == "completed"


async def test_different_keys_make_different_generations(http: httpx.AsyncClient) -> None:
    a = await http.post("/api/v2/generate", json=PAYLOAD, headers={"Idempotency-Key": "a-" + secrets.token_hex(8)})
    b = await http.post("/api/v2/generate", json=PAYLOAD, headers={"Idempotency-Key": "b-" + secrets.token_hex(8)})
    assert a.status_code == b.status_code == 200
    assert a.json()["id"] != b.json()["id"]
    for r in (a, b):
        assert (await wait_finished(http, r.json()["id"]))["status"] == "completed"


async def test_the_same_key_of_another_account_is_its_own(http: httpx.AsyncClient, edge_url: str, other_api_key: str) -> None:
    key = "shared-" + secrets.token_hex(8)
    mine = (await http.post("/api/v2/generate", json=PAYLOAD, headers={"Idempotency-Key": key})).json()["id"]
    async with httpx.AsyncClient(base_url=edge_url, headers={"Authorization": f"Bearer {other_api_key}"}, timeout=60) as other:
        theirs = (await other.post("/api/v2/generate", json=PAYLOAD, headers={"Idempotency-Key": key})).json()["id"]
        assert theirs != mine
        assert (await other.get(f"/api/v2/generate/{mine}")).status_code == 404


async def test_a_malformed_key_is_400(http: httpx.AsyncClient) -> None:
    for bad in (b"x" * 256, "caf\u00e9".encode()):
        r = await http.post("/api/v2/generate", json=PAYLOAD, headers={"Idempotency-Key": bad})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "Idempotency-Key"

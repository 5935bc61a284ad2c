"""A generation belongs to its key's account: another account cannot tell it exists."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.polling import wait_finished


@pytest.fixture
async def other(edge_url: str, other_api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=edge_url, headers={"Authorization": f"Bearer {other_api_key}"}, timeout=60) as c:
        yield c


def assert_not_found(r: httpx.Response, gid: str) -> None:
    assert r.status_code == 404, r.text
    err = r.json()["error"]
    assert err["code"] == "not_found"
    assert gid in err["message"]  # the same answer as for an id that never existed


async def test_another_account_gets_404_everywhere(http: httpx.AsyncClient, other: httpx.AsyncClient) -> None:
    r = await http.post("/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": "mine only", "size": "256x256"})
    gid = r.json()["id"]
    done = await wait_finished(http, gid)
    assert done["status"] == "completed"

    assert_not_found(await other.get(f"/api/v2/generate/{gid}"), gid)
    assert_not_found(await other.get(f"/api/v2/generate/{gid}/events"), gid)
    assert_not_found(await other.post(f"/api/v2/generate/{gid}/cancel"), gid)
    assert_not_found(await other.get(f"/mj/task/{gid}/fetch"), gid)
    listed = await other.post("/mj/task/list-by-condition", json={"ids": [gid]})
    assert listed.status_code == 200 and listed.json() == []
    r = await other.post("/mj/submit/action", json={"taskId": gid, "customId": "MJ::JOB::upsample::1::x"})
    assert r.status_code == 404 and r.json()["code"] == 3

    # ... while its owner still sees all of it, untouched.
    assert (await http.get(f"/api/v2/generate/{gid}")).json()["status"] == "completed"
    assert (await http.get(f"/mj/task/{gid}/fetch")).json()["status"] == "SUCCESS"
    assert [t["id"] for t in (await http.post("/mj/task/list-by-condition", json={"ids": [gid]})).json()] == [gid]


async def test_another_account_cannot_cancel_a_running_generation(http: httpx.AsyncClient, other: httpx.AsyncClient) -> None:
    r = await http.post(
        "/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": "keep running", "size": "1024x1024", "n": 2}
    )
    gid = r.json()["id"]
    assert_not_found(await other.post(f"/api/v2/generate/{gid}/cancel"), gid)
    assert (await wait_finished(http, gid))["status"] == "completed"


async def test_each_account_has_its_own_webhook_secret(http: httpx.AsyncClient, other: httpx.AsyncClient) -> None:
    mine = (await http.get("/api/v2/webhooks/secret")).json()
    theirs = (await other.get("/api/v2/webhooks/secret")).json()
    assert mine["secret"].startswith("whsec_") and theirs["secret"].startswith("whsec_")
    assert mine["secret"] != theirs["secret"]
    assert (await http.get("/api/v2/webhooks/secret")).json()["secret"] == mine["secret"], "stable per key"

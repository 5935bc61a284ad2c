"""Per-key limits through the edge: 429 with Retry-After and x-ratelimit-* headers."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.ledger import admin_client, funded_key


@pytest.fixture(scope="module")
def admin(mesh):  # noqa: ANN001, ANN201
    with admin_client(mesh) as client:
        yield client


async def test_a_free_key_gets_five_images_a_minute(edge_url, admin) -> None:  # noqa: ANN001
    key = funded_key(admin, "free", tokens=100)
    body = {"model": "pixelmesh-sketch", "prompt": "a tally mark", "size": "256x256"}
    async with httpx.AsyncClient(base_url=edge_url, headers={"Authorization": f"Bearer {key.secret}"}, timeout=120) as http:
        answers, sent_at = [], []
        for _ in range(8):  # one after the other, each waiting for its image (OpenAI's sync call)
            sent_at.append(time.monotonic())
            answers.append(await http.post("/v1/images/generations", json=body))
        assert [r.status_code for r in answers] == [200] * 5 + [429] * 3, [r.text for r in answers]
        # the Free plan keeps images 7 days: storage's days-7 lifecycle class
        assert "/days-7/" in answers[0].json()["data"][0]["url"]
        refused = answers[5]
        err = refused.json()["error"]
        assert (err["type"], err["code"]) == ("rate_limit_error", "rate_limit_exceeded")
        assert refused.headers["x-ratelimit-limit-requests"] == "5"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        # a slot frees when the first image leaves the 60-second window
        retry_after = int(refused.headers["Retry-After"])
        expected = 60 - (sent_at[5] - sent_at[0])
        assert expected - 2 <= retry_after <= expected + 2, (retry_after, expected)
        assert refused.headers["x-ratelimit-reset-requests"] == f"{retry_after}s"
        assert int(answers[7].headers["Retry-After"]) <= retry_after
        # honouring Retry-After works; one second less would not
        await asyncio.sleep(max(0.0, sent_at[0] + 60 - time.monotonic() - 2))
        assert (await http.post("/api/v2/generate", json=body)).status_code == 429
        await asyncio.sleep(max(0.0, sent_at[5] + retry_after - time.monotonic()) + 0.5)
        assert (await http.post("/api/v2/generate", json=body)).status_code == 200
    # refused requests cost nothing: six images were admitted (charged, or held while the last runs)
    assert admin.balance(key.account_id).balance.available_tokens == 94

"""The `pixelmesh` operator CLI against the mesh's pricing, and GET /api/v2/usage."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.ledger import admin_client, settled
from tests.support.polling import wait_finished

CLI = Path(sys.executable).with_name("pixelmesh")


def cli(mesh, *args: str, token: str | None = None) -> subprocess.CompletedProcess:  # noqa: ANN001
    env = {**os.environ, "PRICING_ADDR": mesh.addr("pricing"), "PRICING_ADMIN_TOKEN": mesh.admin_token if token is None else token}
    return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=60)


async def test_keys_credits_ledger_and_usage_from_the_cli(mesh, edge_url) -> None:  # noqa: ANN001
    created = cli(mesh, "--json", "keys", "create", "--plan", "basic", "--name", "ci")
    assert created.returncode == 0, created.stderr
    out = json.loads(created.stdout)
    secret, key_id, account = out["secret"], out["api_key"]["id"], out["api_key"]["account_id"]
    assert secret.startswith("pm-") and out["api_key"]["plan"] == "basic"

    credit = cli(mesh, "accounts", "credit", account, "--tokens", "25", "--reference", "invoice-1")
    assert credit.returncode == 0 and "25 tokens available" in credit.stdout, credit.stderr
    again = cli(mesh, "accounts", "credit", account, "--tokens", "25", "--reference", "invoice-1")
    assert "already has a credit" in again.stdout and "25 tokens available" in again.stdout

    listed = cli(mesh, "keys", "list", "--account", account)
    assert key_id in listed.stdout and secret not in listed.stdout  # shown once, stored hashed

    async with httpx.AsyncClient(base_url=edge_url, headers={"Authorization": f"Bearer {secret}"}, timeout=120) as http:
        r = await http.post("/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": "usage", "size": "256x256", "n": 3})
        assert r.status_code == 200, r.text
        assert (await wait_finished(http, r.json()["id"]))["status"] == "completed"
        with admin_client(mesh) as admin:
            await settled(admin, account)
        usage = await http.get("/api/v2/usage")
        assert usage.status_code == 200, usage.text
        body = usage.json()
        assert body["account_id"] == account
        assert [(u["model"], u["api_key_id"], u["generations"], u["images"], u["tokens_spent"], u["cost_usd"]) for u in body["data"]] == [
            ("pixelmesh-sketch", key_id, 1, 3, 3, 0.03)
        ]
        assert body["total"] == {"tokens_spent": 3, "cost_usd": 0.03}
        bad = await http.get("/api/v2/usage", params={"start_date": "yesterday"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "start_date"

    ledger = cli(mesh, "ledger", account)
    assert ledger.returncode == 0
    lines = ledger.stdout.splitlines()
    assert [line.split()[3] for line in lines[1:4]] == ["credit", "reserve", "capture"]
    assert lines[-1] == "balance: 22 available, 0 reserved"
    assert "pixelmesh-sketch" in cli(mesh, "usage", account).stdout

    async with httpx.AsyncClient(base_url=edge_url, headers={"Authorization": f"Bearer {secret}"}) as http:
        assert (await http.get("/v1/models")).status_code == 200  # the edge now remembers the key
        revoked = cli(mesh, "keys", "revoke", key_id)
        assert revoked.returncode == 0 and key_id in revoked.stdout
        # Spending is refused at once (pricing checks the key inside the reservation), even
        # while the edge may still remember the key ...
        r = await http.post("/api/v2/generate", json={"model": "pixelmesh-sketch", "prompt": "after revoke", "size": "256x256"})
        assert r.status_code == 401, r.text
        # ... and every call within a second (EDGE_AUTH_CACHE_SECONDS).
        revoked_at = time.monotonic()
        while (await http.get("/v1/models")).status_code != 401:
            assert time.monotonic() - revoked_at < 1.5, "a revoked key still worked after the cache's second"
            await asyncio.sleep(0.05)


def test_the_cli_needs_the_admin_token(mesh) -> None:  # noqa: ANN001
    wrong = cli(mesh, "keys", "list", token="not-the-token")
    assert wrong.returncode == 1 and "invalid_api_key" in wrong.stderr and "admin" in wrong.stderr
    missing = cli(mesh, "keys", "list", token="")
    assert missing.returncode == 2 and "PRICING_ADMIN_TOKEN" in missing.stderr
    bad_plan = cli(mesh, "keys", "create", "--plan", "platinum", "--name", "x")
    assert bad_plan.returncode == 1 and "Unknown plan" in bad_plan.stderr and "(plan)" in bad_plan.stderr


async def test_a_credit_reference_is_per_account_and_json_says_if_it_was_applied(mesh) -> None:  # noqa: ANN001
    accounts = []
    for name in ("acct-a", "acct-b"):
        created = cli(mesh, "--json", "keys", "create", "--plan", "basic", "--name", name)
        accounts.append(json.loads(created.stdout)["api_key"]["account_id"])
    a, b = accounts

    def credit(account: str) -> dict:
        r = cli(mesh, "--json", "accounts", "credit", account, "--tokens", "10", "--reference", "inv-17")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    assert credit(a)["applied"] is True
    first_b = credit(b)  # the same reference, another account: applied
    assert first_b["applied"] is True and first_b["balance"]["available_tokens"] == "10"
    again_b = credit(b)
    assert again_b["applied"] is False and again_b["balance"]["available_tokens"] == "10"

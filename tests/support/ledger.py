"""Helpers of the ledger's end-to-end tests: accounts and keys through the admin API."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pixelmesh.pricing.v1 import pricing_service_pb2 as pb
from pixelmesh_admin.client import AdminClient


@dataclass(frozen=True)
class FundedKey:
    secret: str
    key_id: str
    account_id: str


def admin_client(mesh, instance_addr: str | None = None) -> AdminClient:  # noqa: ANN001
    return AdminClient(instance_addr or mesh.addr("pricing"), mesh.admin_token)


def funded_key(admin: AdminClient, plan: str, tokens: int, **limits: int) -> FundedKey:
    """A new account with `tokens` and one key on `plan`."""
    created = admin.create_key(plan=plan, name=f"test {plan}", limits=pb.KeyLimits(**limits))
    if tokens:
        admin.credit(created.api_key.account_id, tokens, note="test funds")
    return FundedKey(created.secret, created.api_key.id, created.api_key.account_id)


async def settled(admin: AdminClient, account_id: str, timeout: float = 60.0) -> pb.ListLedgerEntriesResponse:
    """The account's ledger once no reservation is open any more (the events were settled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ledger = admin.ledger(account_id)
        if ledger.balance.reserved_tokens == 0 or loop.time() > deadline:
            return ledger
        await asyncio.sleep(0.2)


def explain(ledger: pb.ListLedgerEntriesResponse) -> None:
    """Each row's balance_after is the one before plus its amount, and the last is the balance."""
    running = 0
    for e in ledger.entries:
        running += e.amount_tokens
        assert e.balance_after == running, (e.kind, e.reference, e.balance_after, running)
    assert running == ledger.balance.available_tokens

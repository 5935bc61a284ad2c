"""Two pricing replicas on one PostgreSQL: the balance still pays for exactly what it holds.

Beside the session's mesh (whose pricing keeps its SQLite file), this starts a PostgreSQL
(deploy/local/postgres.sh) and two pricing processes on it, each with a routing of its
own in front, both routings keeping their idempotency keys in the same database (as the
chart's `database.url` has them); both pricings settle from the events topic in one
consumer group of their own (one group per ledger database). The 50 concurrent submits go
half through each routing, so both replicas reserve against the same balance at the same
time.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.pricing.v1 import pricing_service_pb2, pricing_service_pb2_grpc
from pixelmesh.routing.v1 import routing_service_pb2, routing_service_pb2_grpc
from pixelmesh_admin.client import AdminClient
from svckit.errors import ErrorCode, from_rpc_error
from tests.support.ledger import explain, funded_key, settled
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer

REPLICAS = ("a", "b")


@pytest.fixture(scope="module")
def replicas(mesh) -> Iterator[dict[str, tuple[str, str]]]:  # noqa: ANN001
    """{replica: (pricing address, routing address)}."""
    postgres = PostgresServer().start()
    started, addresses = [], {}
    try:
        for name in REPLICAS:
            pricing_port, routing_port = free_port(), free_port()
            mesh.start(
                "pricing", instance=f"pricing-pg-{name}", GRPC_PORT=str(pricing_port), METRICS_PORT="0",
                PRICING_DATABASE_URL=postgres.url(), PRICING_LEDGER_GROUP="pixelmesh-pricing-ledger-pg",
            )
            started.append((f"pricing-pg-{name}", pricing_port))
            mesh.start(
                "routing", instance=f"routing-pg-{name}", GRPC_PORT=str(routing_port), METRICS_PORT="0",
                PRICING_ADDR=f"127.0.0.1:{pricing_port}", ROUTING_DATABASE_URL=postgres.url(),
            )
            started.append((f"routing-pg-{name}", routing_port))
            addresses[name] = (f"127.0.0.1:{pricing_port}", f"127.0.0.1:{routing_port}")
        for instance, port in started:
            mesh.wait_serving(port, instance)
        yield addresses
    finally:
        for instance, _ in reversed(started):
            mesh.stop(instance)
        postgres.stop()


async def submit(routing_addr: str, key, prompt: str, idempotency_key: str = ""):  # noqa: ANN001, ANN201
    async with grpc.aio.insecure_channel(routing_addr) as ch:
        try:
            return await routing_service_pb2_grpc.RoutingServiceStub(ch).SubmitGeneration(
                routing_service_pb2.SubmitGenerationRequest(
                    params=gen.GenerationParams(model="pixelmesh-sketch", prompt=prompt, size="256x256"),
                    account_id=key.account_id, api_key_id=key.key_id, retention_class="days-90",
                    idempotency_key=idempotency_key,
                ),
                timeout=60,
            )
        except grpc.aio.AioRpcError as exc:
            return from_rpc_error(exc)


async def test_fifty_concurrent_submits_through_two_replicas(mesh, replicas) -> None:  # noqa: ANN001
    admin_a = AdminClient(replicas["a"][0], mesh.admin_token)
    admin_b = AdminClient(replicas["b"][0], mesh.admin_token)
    try:
        key = funded_key(admin_a, "pro", tokens=0)
        admin_b.credit(key.account_id, 10)  # one database: what b credits, a sees
        assert admin_a.balance(key.account_id).balance.available_tokens == 10
        results = await asyncio.gather(
            *(submit(replicas[REPLICAS[i % 2]][1], key, f"replica race {i}") for i in range(50))
        )
        accepted = [r for r in results if not isinstance(r, Exception)]
        refused = Counter(r.code for r in results if isinstance(r, Exception))
        assert len(accepted) == 10 and refused == {ErrorCode.INSUFFICIENT_BALANCE: 40}, refused
        assert admin_b.balance(key.account_id).balance.available_tokens == 0
        ledger = await settled(admin_a, key.account_id, timeout=120)
        assert (ledger.balance.available_tokens, ledger.balance.reserved_tokens) == (0, 0)
        assert Counter(e.kind for e in ledger.entries) == {"credit": 1, "reserve": 10, "capture": 10}
        assert min(e.balance_after for e in ledger.entries) == 0
        explain(ledger)
    finally:
        admin_a.close()
        admin_b.close()


async def test_a_key_revoked_on_one_replica_stops_on_the_other(mesh, replicas) -> None:  # noqa: ANN001
    with AdminClient(replicas["a"][0], mesh.admin_token) as admin_a, AdminClient(replicas["b"][0], mesh.admin_token) as admin_b:
        key = funded_key(admin_a, "pro", tokens=1)
        async with grpc.aio.insecure_channel(replicas["b"][0]) as ch:
            stub = pricing_service_pb2_grpc.PricingServiceStub(ch)
            who = await stub.Authenticate(pricing_service_pb2.AuthenticateRequest(api_key=key.secret))
            assert who.account_id == key.account_id
            admin_a.revoke_key(key.key_id)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.Authenticate(pricing_service_pb2.AuthenticateRequest(api_key=key.secret))
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert admin_b.list_keys(key.account_id).api_keys[0].HasField("revoke_time")


async def test_one_idempotency_key_through_both_replicas_makes_one_generation(mesh, replicas) -> None:  # noqa: ANN001
    with AdminClient(replicas["a"][0], mesh.admin_token) as admin:
        key = funded_key(admin, "pro", tokens=10)
        results = await asyncio.gather(
            *(submit(replicas[REPLICAS[i % 2]][1], key, "one order", idempotency_key="order-7") for i in range(8))
        )
        assert not [r for r in results if isinstance(r, Exception)], results
        assert len({op.name for op in results}) == 1
        ledger = await settled(admin, key.account_id, timeout=120)
        assert Counter(e.kind for e in ledger.entries) == {"credit": 1, "reserve": 1, "capture": 1}
        assert ledger.balance.available_tokens == 9

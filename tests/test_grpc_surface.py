"""Internal clients: gRPC stubs, long-running operations, health and reflection on every service."""

from __future__ import annotations

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.pricing.v1 import pricing_service_pb2, pricing_service_pb2_grpc
from pixelmesh.routing.v1 import routing_service_pb2, routing_service_pb2_grpc
from pixelmesh.status.v1 import status_service_pb2, status_service_pb2_grpc
from svckit.accounts import ALL_ACCOUNTS, account_metadata, operator_metadata

SERVICES = {
    "routing": "pixelmesh.routing.v1.RoutingService",
    "pricing": "pixelmesh.pricing.v1.PricingService",
    "storage": "pixelmesh.storage.v1.StorageService",
    "status": "pixelmesh.status.v1.StatusService",
    "worker": None,
    "edge": None,
}


async def test_every_service_is_serving_and_reflects(mesh) -> None:
    for name, full_name in SERVICES.items():
        async with grpc.aio.insecure_channel(mesh.addr(name)) as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING, name
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            listed = {s.name async for r in responses for s in r.list_services_response.service}
            assert "grpc.health.v1.Health" in listed, name
            if full_name:
                assert full_name in listed, (name, listed)


async def test_submit_by_stub_and_wait_on_the_operation(mesh) -> None:
    async with grpc.aio.insecure_channel(mesh.addr("pricing")) as pricing:  # a real key: the submit is charged to it
        who = await pricing_service_pb2_grpc.PricingServiceStub(pricing).Authenticate(
            pricing_service_pb2.AuthenticateRequest(api_key=mesh.api_key)
        )
    async with grpc.aio.insecure_channel(mesh.addr("routing")) as routing, grpc.aio.insecure_channel(
        mesh.addr("status")
    ) as status:
        op = await routing_service_pb2_grpc.RoutingServiceStub(routing).SubmitGeneration(
            routing_service_pb2.SubmitGenerationRequest(
                params=gen.GenerationParams(model="pixelmesh-sketch", prompt="by stub", size="256x256", n=2),
                account_id=who.account_id,
                api_key_id=who.api_key_id,
                retention_class="days-7",
            )
        )
        assert op.name.startswith("generations/gen_") and not op.done
        operations = operations_pb2_grpc.OperationsStub(status)
        mine = account_metadata(who.account_id)  # status answers reads made for an account
        done = await operations.WaitOperation(
            operations_pb2.WaitOperationRequest(name=op.name, timeout=Duration(seconds=60)), metadata=mine
        )
        assert done.done and done.HasField("response")
        result = gen.Generation()
        done.response.Unpack(result)
        assert result.state == gen.GENERATION_STATE_SUCCEEDED
        assert [i.object_key.split("/")[0] for i in result.images] == ["days-7", "days-7"]
        again = await operations.GetOperation(operations_pb2.GetOperationRequest(name=op.name), metadata=mine)
        assert again.done

        try:
            await routing_service_pb2_grpc.RoutingServiceStub(routing).SubmitGeneration(
                routing_service_pb2.SubmitGenerationRequest(params=gen.GenerationParams(model="pixelmesh-sketch", prompt=""))
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        else:
            raise AssertionError("an empty prompt must be refused")


async def rpc_code(call) -> grpc.StatusCode | None:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return None


async def test_status_reads_are_scoped_to_the_callers_account(mesh, http) -> None:
    """One account cannot get, batch-get, watch, wait on, list or cancel another's generations
    through status's gRPC surface; `*` with the operator token sees every account's (without it, refused); naming no account is refused."""
    gid = (await http.post("/api/v2/generate", json={"prompt": "scoped", "size": "256x256"})).json()["id"]
    async with grpc.aio.insecure_channel(mesh.addr("pricing")) as pricing:
        who = await pricing_service_pb2_grpc.PricingServiceStub(pricing).Authenticate(
            pricing_service_pb2.AuthenticateRequest(api_key=mesh.api_key)
        )
    mine, theirs = (account_metadata(a) for a in (who.account_id, "acct_other"))
    everyone = operator_metadata(mesh.admin_token)
    no_token, wrong_token = account_metadata(ALL_ACCOUNTS), operator_metadata("pm-admin-guessed")
    name = f"generations/{gid}"
    async with grpc.aio.insecure_channel(mesh.addr("status")) as ch:
        status = status_service_pb2_grpc.StatusServiceStub(ch)
        operations = operations_pb2_grpc.OperationsStub(ch)
        get = status_service_pb2.GetGenerationRequest(generation_id=gid)

        assert (await status.GetGeneration(get, metadata=mine, timeout=10)).generation.account_id == who.account_id
        assert (await status.GetGeneration(get, metadata=everyone, timeout=10)).generation.id == gid
        assert await rpc_code(status.GetGeneration(get, metadata=theirs, timeout=10)) == grpc.StatusCode.NOT_FOUND
        assert await rpc_code(status.GetGeneration(get, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
        for not_an_operator in (no_token, wrong_token):  # every account's generations are for operators only
            assert await rpc_code(status.GetGeneration(get, metadata=not_an_operator, timeout=10)) == (
                grpc.StatusCode.UNAUTHENTICATED
            )

        batch = status_service_pb2.BatchGetGenerationsRequest(generation_ids=[gid])
        assert [g.id for g in (await status.BatchGetGenerations(batch, metadata=mine, timeout=10)).generations] == [gid]
        assert not (await status.BatchGetGenerations(batch, metadata=theirs, timeout=10)).generations
        assert await rpc_code(status.BatchGetGenerations(batch, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT

        watch = status.WatchGeneration(status_service_pb2.WatchGenerationRequest(generation_id=gid), metadata=theirs,
                                       timeout=10)
        assert await rpc_code(watch.read()) == grpc.StatusCode.NOT_FOUND
        wait = operations_pb2.WaitOperationRequest(name=name, timeout=Duration(seconds=1))
        assert await rpc_code(operations.WaitOperation(wait, metadata=theirs, timeout=10)) == grpc.StatusCode.NOT_FOUND
        get_op = operations_pb2.GetOperationRequest(name=name)
        assert await rpc_code(operations.GetOperation(get_op, metadata=theirs, timeout=10)) == grpc.StatusCode.NOT_FOUND
        cancel = status_service_pb2.CancelGenerationRequest(generation_id=gid)
        assert await rpc_code(status.CancelGeneration(cancel, metadata=theirs, timeout=10)) == grpc.StatusCode.NOT_FOUND

        listing = operations_pb2.ListOperationsRequest(page_size=500)
        listed_mine = {o.name for o in (await operations.ListOperations(listing, metadata=mine, timeout=10)).operations}
        listed_theirs = {o.name for o in (await operations.ListOperations(listing, metadata=theirs, timeout=10)).operations}
        listed_all = {o.name for o in (await operations.ListOperations(listing, metadata=everyone, timeout=10)).operations}
        assert name in listed_mine and name in listed_all and name not in listed_theirs
        for op in (await operations.ListOperations(listing, metadata=theirs, timeout=10)).operations:
            g = gen.Generation()
            op.metadata.Unpack(g)
            assert g.account_id == "acct_other"
        assert await rpc_code(operations.ListOperations(listing, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT

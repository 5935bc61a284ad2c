"""Cancelling a generation: REST and google.longrunning, the control command, first end wins."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from google.longrunning import operations_pb2, operations_pb2_grpc

from pixelmesh.events.v1 import events_pb2
from svckit.accounts import ALL_ACCOUNTS, account_metadata, operator_metadata
from tests.support import sse
from tests.support.polling import wait_finished

CONTROL = "pixelmesh.generation.control"
# Four large images keep the local worker busy for seconds: long enough to cancel.
SLOW = {"model": "pixelmesh-sketch", "prompt": "a slow canyon to cancel", "size": "1792x1024", "n": 4, "quality": "hd"}


async def submit(http: httpx.AsyncClient, payload: dict) -> str:
    r = await http.post("/api/v2/generate", json=payload)
    assert r.status_code == 200, r.text
    return r.json()["id"]


async def control_commands(mesh, generation_id: str, timeout: float = 20.0) -> list[events_pb2.ControlMessage]:
    consumer = AIOKafkaConsumer(CONTROL, bootstrap_servers=f"127.0.0.1:{mesh.ports['KAFKA_PORT']}", auto_offset_reset="earliest")
    await consumer.start()
    found: list[events_pb2.ControlMessage] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not found and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for rec in records:
                    if rec.key == generation_id.encode():
                        found.append(events_pb2.ControlMessage.FromString(rec.value))
    finally:
        await consumer.stop()
    return found


async def test_cancel_stops_a_running_generation_for_good(mesh, http: httpx.AsyncClient) -> None:
    gid = await submit(http, SLOW)
    r = await http.post(f"/api/v2/generate/{gid}/cancel")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["status"], body["state"]) == (gid, "failed", "cancelled")
    assert body["error"]["code"] == "cancelled"
    assert body["result_url"] is None and body["result_urls"] == [] and body["tokens_spent"] == 0

    # The workers are told to stop (the control topic every worker reads).
    commands = await control_commands(mesh, gid)
    assert [c.cancel_generation.generation_id for c in commands] == [gid]

    # Whatever the worker still sends, the first end (the cancel) stays: no images ever.
    for _ in range(30):
        after = (await http.get(f"/api/v2/generate/{gid}")).json()
        assert (after["status"], after["state"], after["result_urls"], after["tokens_spent"]) == ("failed", "cancelled", [], 0)
        await asyncio.sleep(0.2)
    async with http.stream("GET", f"/api/v2/generate/{gid}/events") as s:
        names = [e.event async for e in sse.events(s)]
    assert names == ["cancelled"]


async def test_cancelling_an_ended_generation_is_409_with_its_state(http: httpx.AsyncClient) -> None:
    gid = await submit(http, {"model": "pixelmesh-sketch", "prompt": "done already", "size": "256x256"})
    done = await wait_finished(http, gid)
    assert done["status"] == "completed"
    r = await http.post(f"/api/v2/generate/{gid}/cancel")
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "conflict" and "already ended" in err["message"]
    assert err["generation"]["id"] == gid and err["generation"]["status"] == "completed"
    assert err["generation"]["result_url"]
    assert (await http.get(f"/api/v2/generate/{gid}")).json()["status"] == "completed"


async def test_a_second_cancel_is_409_and_the_first_stands(http: httpx.AsyncClient) -> None:
    gid = await submit(http, SLOW)
    assert (await http.post(f"/api/v2/generate/{gid}/cancel")).status_code == 200
    r = await http.post(f"/api/v2/generate/{gid}/cancel")
    assert r.status_code == 409
    assert r.json()["error"]["generation"]["state"] == "cancelled"


async def test_cancel_of_an_unknown_generation_is_404(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/v2/generate/gen_01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


async def test_longrunning_cancel_operation(mesh, http: httpx.AsyncClient) -> None:
    running = await submit(http, SLOW)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['STATUS_GRPC_PORT']}") as ch:
        ops = operations_pb2_grpc.OperationsStub(ch)
        admin = operator_metadata(mesh.admin_token)  # an operator's call: every account's operations
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # `*` without the operator token
            await ops.CancelOperation(operations_pb2.CancelOperationRequest(name=f"generations/{running}"),
                                      metadata=account_metadata(ALL_ACCOUNTS), timeout=15)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await ops.CancelOperation(operations_pb2.CancelOperationRequest(name=f"generations/{running}"), metadata=admin,
                                  timeout=15)
        op = await ops.GetOperation(operations_pb2.GetOperationRequest(name=f"generations/{running}"), metadata=admin,
                                    timeout=5)
        assert op.done and op.error.code == grpc.StatusCode.CANCELLED.value[0]
        assert not op.HasField("response")
        try:
            await ops.CancelOperation(operations_pb2.CancelOperationRequest(name=f"generations/{running}"),
                                      metadata=admin, timeout=15)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
        else:
            raise AssertionError("cancelling an ended operation must fail")
    assert (await http.get(f"/api/v2/generate/{running}")).json()["state"] == "cancelled"

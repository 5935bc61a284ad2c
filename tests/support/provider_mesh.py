"""Provider workers in the real mesh: an extra worker process per provider, jobs dispatched
the way routing dispatches them (QUEUED state on the events topic, then the job on the
provider's topic), and the generation read back from status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import httpx

from bus import CONTROL_TOPIC, EVENTS_TOPIC, Producer, generation_event, requests_topic
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from pixelmesh.status.v1 import status_service_pb2, status_service_pb2_grpc
from pixelmesh.storage.v1 import storage_service_pb2 as storage_pb
from pixelmesh.storage.v1 import storage_service_pb2_grpc
from svckit.accounts import operator_metadata
from tests.support.ports import free_port

FAST_POLLING = {"WORKER_POLL_INTERVAL_SECONDS": "0.1", "WORKER_POLL_MAX_INTERVAL_SECONDS": "0.5", "WORKER_RETRY_BUDGET_SECONDS": "3"}


def require_route(mesh, provider: str) -> None:
    """Skip unless routing sends this provider's models to a worker pool in this mesh
    (tests/conftest.py sets ROUTING_PROVIDERS; the provider must be in it)."""
    import pytest

    if provider not in mesh.ports["ROUTING_PROVIDERS"].split(","):
        pytest.skip(f"ROUTING_PROVIDERS={mesh.ports['ROUTING_PROVIDERS']!r} does not route to {provider!r}")


def start_worker(mesh, provider: str, *, instance: str = "", **env: str) -> str:
    """A worker process for `provider` on its own ports, polling and retrying fast unless
    `env` says otherwise; returns its instance name."""
    instance = instance or f"worker-{provider}"
    port = free_port()
    mesh.start("worker", instance=instance, WORKER_PROVIDER=provider, GRPC_PORT=str(port),
               METRICS_PORT=str(free_port()), **{**FAST_POLLING, **env})
    mesh.wait_serving(port, instance)
    return instance


def bootstrap(mesh) -> str:
    return f"127.0.0.1:{mesh.ports['KAFKA_PORT']}"


def queued(g: gen.Generation, provider: str) -> gen.Generation:
    """A test generation as routing hands it to `provider`."""
    g.provider = provider
    return g


async def dispatch(mesh, generation: gen.Generation, routes: tuple[str, ...] = ()) -> None:
    """What routing does: the QUEUED state, then the job (routing's plan: `routes`, else the
    generation's provider alone) on the provider's topic."""
    job = events_pb2.GenerationJob(generation=generation, routes=routes or (generation.provider,))
    producer = Producer(bootstrap(mesh), client_id="test-dispatch")
    await producer.start()
    try:
        await producer.send(EVENTS_TOPIC, generation.id, generation_event(generation, "routing"))
        await producer.send(requests_topic(generation.provider), generation.id, job)
    finally:
        await producer.stop()


async def cancel(mesh, generation_id: str) -> None:
    producer = Producer(bootstrap(mesh), client_id="test-control")
    await producer.start()
    try:
        message = events_pb2.ControlMessage(cancel_generation=events_pb2.CancelGeneration(generation_id=generation_id, reason="test"))
        await producer.send(CONTROL_TOPIC, generation_id, message)
    finally:
        await producer.stop()


async def current(mesh, generation_id: str) -> gen.Generation | None:
    async with grpc.aio.insecure_channel(mesh.addr("status")) as ch:
        try:
            resp = await status_service_pb2_grpc.StatusServiceStub(ch).GetGeneration(
                status_service_pb2.GetGenerationRequest(generation_id=generation_id),
                metadata=operator_metadata(mesh.admin_token), timeout=5
            )
        except grpc.aio.AioRpcError:
            return None
        return resp.generation


async def wait_for(mesh, generation_id: str, predicate, timeout: float = 60.0) -> gen.Generation:
    """Poll status until predicate(generation) holds; the last state otherwise (for the assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        g = await current(mesh, generation_id)
        if g is not None and predicate(g) or loop.time() > deadline:
            return g
        await asyncio.sleep(0.2)


async def finished(mesh, generation_id: str, timeout: float = 60.0) -> gen.Generation:
    return await wait_for(mesh, generation_id, lambda g: g.state in (
        gen.GENERATION_STATE_SUCCEEDED, gen.GENERATION_STATE_FAILED, gen.GENERATION_STATE_CANCELLED), timeout)


async def store(mesh, generation_id: str, data: bytes, index: int = 0) -> str:
    """Put an (input) image in the store through the storage service; its object key."""
    async def parts() -> AsyncIterator[storage_pb.PutImageRequest]:
        yield storage_pb.PutImageRequest(header=storage_pb.PutImageHeader(
            generation_id=generation_id, index=index, retention_class="days-7", output_format=gen.OUTPUT_FORMAT_PNG, width=1, height=1))
        yield storage_pb.PutImageRequest(chunk=data)

    async with grpc.aio.insecure_channel(mesh.addr("storage")) as ch:
        resp = await storage_service_pb2_grpc.StorageServiceStub(ch).PutImage(parts(), timeout=30)
    return resp.image.object_key


async def fetch(mesh, object_key: str) -> bytes:
    async with grpc.aio.insecure_channel(mesh.addr("storage")) as ch:
        chunks = [p.chunk async for p in storage_service_pb2_grpc.StorageServiceStub(ch).GetImage(
            storage_pb.GetImageRequest(object_key=object_key), timeout=30)]
    return b"".join(chunks)


async def served_models(edge_url: str, api_key: str) -> set[str]:
    async with httpx.AsyncClient(base_url=edge_url, headers={"Authorization": f"Bearer {api_key}"}) as http:
        return {m["id"] for m in (await http.get("/v1/models")).json()["data"]}

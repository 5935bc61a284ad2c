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


def launch_worker(mesh, provider: str, *, instance: str = "", **env: str) -> tuple[str, int]:
    """Start a worker process for `provider` on its own ports, polling and retrying fast
    unless `env` says otherwise, without waiting for it; (instance name, gRPC port)."""
    instance = instance or f"worker-{provider}"
    port = free_port()
    mesh.start("worker", instance=instance, WORKER_PROVIDER=provider, GRPC_PORT=str(port),
               METRICS_PORT=str(free_port()), **{**FAST_POLLING, **env})
    return instance, port


def start_worker(mesh, provider: str, *, instance: str = "", **env: str) -> str:
    """A worker process for `provider` (launch_worker), once it serves; its instance name."""
    instance, port = launch_worker(mesh, provider, instance=instance, **env)
    mesh.wait_serving(port, instance)
    return instance


class Gateway:
    """A routing that enables only `providers` (with its own store) and an edge over it: a
    generation submitted there is planned on those routes alone (routing plans a
    generation's routes at admission, and a failed attempt goes only to a planned one).
    Workers are the pools' own (launch_worker); they may report to the mesh's routing.

    `launch` starts the processes without waiting (several gateways start at once), `wait`
    returns once they serve, `stop` ends them."""

    def __init__(self, mesh, providers: list[str], *, name: str) -> None:
        self.mesh = mesh
        self.providers = providers
        self.name = name
        self.routing_port, self.edge_http, self.edge_grpc = free_port(), free_port(), free_port()
        self.edge_url = f"http://127.0.0.1:{self.edge_http}"
        self.instances = [f"{name}-edge", f"{name}-routing"]  # in the order to stop them

    def launch(self) -> Gateway:
        mesh, routing, edge = self.mesh, self.instances[1], self.instances[0]
        mesh.start("routing", instance=routing, GRPC_PORT=str(self.routing_port), METRICS_PORT="0",
                   ROUTING_PROVIDERS=",".join(self.providers),
                   ROUTING_DATABASE_URL=f"sqlite+aiosqlite:///{mesh.run_dir / (routing + '.db')}")
        mesh.start("edge", instance=edge, EDGE_HTTP_PORT=str(self.edge_http), GRPC_PORT=str(self.edge_grpc),
                   METRICS_PORT="0", ROUTING_ADDR=f"127.0.0.1:{self.routing_port}")
        return self

    def wait(self, timeout: float = 120.0) -> Gateway:
        self.mesh.wait_serving(self.routing_port, self.instances[1], timeout=timeout)
        self.mesh.wait_serving(self.edge_grpc, self.instances[0], timeout=timeout)
        return self

    def stop(self) -> None:
        for instance in self.instances:
            self.mesh.stop(instance)


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

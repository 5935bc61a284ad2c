"""GrpcService health: readiness follows the checks, liveness only the process."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from svckit.server import LIVENESS_SERVICE, GrpcService
from svckit.settings import ServiceSettings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _status(port: int, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return reply.status


async def _wait_for(port: int, service: str, want: int) -> None:
    for _ in range(200):
        try:
            if await _status(port, service) == want:
                return
        except grpc.aio.AioRpcError:
            pass  # not listening yet
        await asyncio.sleep(0.05)
    raise AssertionError(f"health {service!r} never became {want}")


async def test_liveness_serves_while_dependencies_are_down_and_stops_on_shutdown() -> None:
    dependency_up = False

    async def dependency() -> bool:
        return dependency_up

    svc = GrpcService(ServiceSettings(service_name="svc-under-test", grpc_port=0, shutdown_grace_seconds=1))
    svc.readiness_check(dependency)
    seen_at_shutdown: dict[str, int] = {}

    async def record_health() -> None:  # on_stop hooks run before the server stops
        assert svc.port is not None
        seen_at_shutdown[""] = await _status(svc.port, "")
        seen_at_shutdown[LIVENESS_SERVICE] = await _status(svc.port, LIVENESS_SERVICE)

    svc.on_stop(record_health)
    task = asyncio.create_task(svc.run())
    try:
        while svc.port is None:
            await asyncio.sleep(0.01)
        await _wait_for(svc.port, LIVENESS_SERVICE, SERVING)
        await asyncio.sleep(0.6)  # a few readiness rounds with the dependency down
        assert await _status(svc.port, "") == NOT_SERVING
        assert await _status(svc.port, LIVENESS_SERVICE) == SERVING

        dependency_up = True
        await _wait_for(svc.port, "", SERVING)
        assert await _status(svc.port, LIVENESS_SERVICE) == SERVING

        dependency_up = False  # an outage after start: not ready, still alive
        await _wait_for(svc.port, "", NOT_SERVING)
        assert await _status(svc.port, LIVENESS_SERVICE) == SERVING
    finally:
        svc.stop()
        await asyncio.wait_for(task, timeout=30)
    assert seen_at_shutdown == {"": NOT_SERVING, LIVENESS_SERVICE: NOT_SERVING}

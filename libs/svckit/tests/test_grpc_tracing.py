"""The mesh's own gRPC spans: CLIENT and SERVER spans of one trace, status codes, call shapes."""

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from svckit.grpc_client import channel
from svckit.grpc_tracing import traced_servicer


@pytest.fixture
def spans() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_a_call_is_a_client_span_and_a_server_span_of_one_trace(spans: InMemorySpanExporter) -> None:
    servicer = health.aio.HealthServicer()
    await servicer.set("pixelmesh.test", health_pb2.HealthCheckResponse.SERVING)
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(traced_servicer(servicer, "grpc.health.v1.Health"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with channel(f"127.0.0.1:{port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            call = stub.Check(health_pb2.HealthCheckRequest(service="pixelmesh.test"), timeout=5)
            assert (await call).status == health_pb2.HealthCheckResponse.SERVING
            assert await call.initial_metadata() is not None  # the call itself stays reachable
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.Check(health_pb2.HealthCheckRequest(service="unknown"), timeout=5)
            assert exc.value.code() == grpc.StatusCode.NOT_FOUND
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="pixelmesh.test"), timeout=5)
            async for update in watch:  # a server stream through the traced call
                assert update.status == health_pb2.HealthCheckResponse.SERVING
                break
            watch.cancel()
    finally:
        await server.stop(None)

    finished = [s for s in spans.get_finished_spans() if s.name == "/grpc.health.v1.Health/Check"]
    clients = [s for s in finished if s.kind == trace.SpanKind.CLIENT]
    servers = [s for s in finished if s.kind == trace.SpanKind.SERVER]
    assert len(clients) == 2 and len(servers) == 2
    for client, server_span in zip(clients, sorted(servers, key=lambda s: s.start_time), strict=True):
        assert server_span.context.trace_id == client.context.trace_id
        assert server_span.parent is not None and server_span.parent.span_id == client.context.span_id
        assert client.attributes["rpc.system"] == "grpc" and client.attributes["rpc.method"] == "Check"
        assert client.attributes["rpc.service"] == "grpc.health.v1.Health"
    assert [s.attributes["rpc.grpc.status_code"] for s in clients] == [0, grpc.StatusCode.NOT_FOUND.value[0]]
    assert sorted(s.attributes["rpc.grpc.status_code"] for s in servers) == [0, grpc.StatusCode.NOT_FOUND.value[0]]
    assert not clients[1].status.is_ok
    assert any(
        s.name == "/grpc.health.v1.Health/Watch" and s.kind == trace.SpanKind.CLIENT for s in spans.get_finished_spans()
    )

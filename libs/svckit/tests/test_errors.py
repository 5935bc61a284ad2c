import grpc
import pytest

from svckit.errors import GRPC_CODES, ErrorCode, GatewayError, abort_with, from_rpc_error
from svckit.ids import generation_id_time_ms, new_generation_id
from svckit.settings import ServiceSettings, load_settings


class _Needs(ServiceSettings):
    routing_addr: str


def test_missing_setting_names_the_variable(monkeypatch, capsys) -> None:
    monkeypatch.delenv("ROUTING_ADDR", raising=False)
    with pytest.raises(SystemExit) as exc:
        load_settings(_Needs)
    assert exc.value.code == 2
    assert "ROUTING_ADDR: required but not set" in capsys.readouterr().err


def test_every_code_maps_to_grpc() -> None:
    assert set(GRPC_CODES) == set(ErrorCode)


def test_ids_sort_by_time_and_carry_it() -> None:
    a, b = new_generation_id(now_ms=1_700_000_000_000), new_generation_id(now_ms=1_700_000_000_001)
    assert a < b
    assert generation_id_time_ms(a) == 1_700_000_000_000
    assert generation_id_time_ms("gen_nope") is None


async def test_gateway_error_round_trips_through_grpc() -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    class Failing(health_pb2_grpc.HealthServicer):
        async def Check(self, request, context):
            await abort_with(context, GatewayError(ErrorCode.INVALID_REQUEST, "bad size", param="size"))

    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(Failing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        err = from_rpc_error(exc.value)
        assert (err.code, err.message, err.param) == (ErrorCode.INVALID_REQUEST, "bad size", "size")
    finally:
        await server.stop(None)

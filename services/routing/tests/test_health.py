import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from bus import Record
from pixelmesh.events.v1 import events_pb2
from pixelmesh.routing.v1 import routing_service_pb2 as pb
from routing.health import ProviderHealthBoard
from routing.routes import CircuitBreaker, RoutePlanner, routes_for
from svckit.errors import ErrorCode, GatewayError


class Clock:
    def __init__(self) -> None:
        self.now = 1_780_000_000.0

    def __call__(self) -> float:
        return self.now


def report(clock: Clock, provider: str, worker: str, healthy: bool, reason: str = "") -> Record:
    msg = events_pb2.ProviderHealth(
        provider=provider,
        worker=worker,
        healthy=healthy,
        code="" if healthy else ErrorCode.PROVIDER_AUTH.value,
        reason=reason,
        report_time=Timestamp(seconds=int(clock.now)),
        interval_seconds=30,
    )
    return Record(topic="pixelmesh.provider.health", partition=0, offset=0, key=f"{provider}/{worker}", message=msg)


def test_a_pool_is_unknown_healthy_or_unhealthy_from_its_current_reports() -> None:
    clock = Clock()
    board = ProviderHealthBoard(clock)
    assert board.state("openai") == (pb.POOL_HEALTH_UNKNOWN, None)
    board.apply(report(clock, "openai", "w1", False, "openai refused the gateway's credentials (HTTP 401)"))
    health, latest = board.state("openai")
    assert health == pb.POOL_HEALTH_UNHEALTHY and "HTTP 401" in latest.reason
    board.apply(report(clock, "openai", "w2", True))  # one worker that works is enough
    assert board.state("openai")[0] == pb.POOL_HEALTH_HEALTHY and len(board.current("openai")) == 2
    board.apply(report(clock, "openai", "w2", False, "refused"))  # its latest report counts
    assert board.state("openai")[0] == pb.POOL_HEALTH_UNHEALTHY
    clock.now += 3 * 30 + 1  # both workers are gone: no current report
    assert board.state("openai") == (pb.POOL_HEALTH_UNKNOWN, None)


def test_the_planner_refuses_a_model_whose_every_pool_is_unhealthy_naming_it() -> None:
    clock = Clock()
    board = ProviderHealthBoard(clock)
    planner = RoutePlanner(CircuitBreaker(), health=board)
    board.apply(report(clock, "openai", "w1", False, "openai refused the gateway's credentials (HTTP 401)"))
    with pytest.raises(GatewayError) as exc:
        planner.plan(routes_for(["openai"]))
    assert exc.value.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert "openai" in exc.value.message and "HTTP 401" in exc.value.message
    assert exc.value.metadata["provider"] == "openai"
    # with another route, the unhealthy pool is skipped, first and as a fallback
    assert planner.plan(routes_for(["openai", "replicate"])) == ["replicate"]
    assert planner.next_route(["openai", "fal"], tried={"replicate"}) == "fal"

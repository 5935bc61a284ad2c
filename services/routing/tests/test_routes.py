import random

import pytest

from lifecycle import advance, failed_attempt
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from routing.attempts import AttemptDecisions, SuccessObserver, decide
from routing.routes import Circuit, CircuitBreaker, Route, RoutePlanner, routes_for
from svckit.errors import ErrorCode, GatewayError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_circuit_opens_on_consecutive_failures_then_half_opens_for_one_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, open_seconds=10, clock=clock)
    for _ in range(2):
        breaker.record_failure("bfl")
    assert breaker.allows("bfl")
    breaker.record_success("bfl")  # a success resets the count
    for _ in range(3):
        breaker.record_failure("bfl")
    assert breaker.state("bfl") is Circuit.OPEN and not breaker.allows("bfl")
    assert breaker.retry_after("bfl") == pytest.approx(10)
    clock.now = 10.5
    assert breaker.state("bfl") is Circuit.HALF_OPEN and breaker.allows("bfl")
    breaker.attempt_started("bfl")
    assert not breaker.allows("bfl"), "only one probe at a time"
    breaker.record_failure("bfl")  # the probe failed: open again
    assert breaker.state("bfl") is Circuit.OPEN
    clock.now = 21
    breaker.attempt_started("bfl")
    breaker.record_success("bfl")
    assert breaker.state("bfl") is Circuit.CLOSED and breaker.allows("bfl")


def test_a_lost_probe_stops_blocking_after_the_open_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, open_seconds=5, clock=clock)
    breaker.record_failure("fal")
    clock.now = 6
    breaker.attempt_started("fal")
    assert not breaker.allows("fal")
    clock.now = 12
    assert breaker.allows("fal")


def test_plan_prefers_weights_and_skips_open_circuits() -> None:
    breaker = CircuitBreaker(failure_threshold=1, open_seconds=60)
    planner = RoutePlanner(breaker, random.Random(7))
    routes = routes_for(["bfl", "replicate", "fal"])
    assert [planner.plan(routes)[0] for _ in range(20)] == ["bfl"] * 20
    assert planner.plan(routes) == ["bfl", "replicate", "fal"]
    breaker.record_failure("bfl")
    assert planner.plan(routes)[0] == "replicate"
    split = [planner.plan([Route("bfl", 0), Route("replicate", 3), Route("fal", 1)])[0] for _ in range(400)]
    assert 250 < split.count("replicate") < 350 and "bfl" not in split


def test_every_circuit_open_is_provider_unavailable_with_a_wait() -> None:
    breaker = CircuitBreaker(failure_threshold=1, open_seconds=60)
    breaker.record_failure("bfl")
    with pytest.raises(GatewayError) as exc:
        RoutePlanner(breaker).plan(routes_for(["bfl"]))
    assert exc.value.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert 55 <= int(exc.value.metadata["retry_after_seconds"]) <= 60


def handback(provider: str = "bfl", retryable: bool = True) -> events_pb2.GenerationJob:
    """A worker's failure report: the job, its attempt ended with the error recorded on it."""
    g = gen.Generation(id="gen_1", state=gen.GENERATION_STATE_RUNNING, version=4, attempt=1, provider=provider)
    g.attempts.add(
        number=1, provider=provider, error=gen.GenerationError(code="provider_unavailable", retryable=retryable)
    )
    return events_pb2.GenerationJob(generation=g, routes=["bfl", "replicate", "fal"])


def test_a_handed_back_generation_goes_to_the_next_route() -> None:
    planner = RoutePlanner(CircuitBreaker())
    d = decide(handback(), planner)
    assert d.provider == "replicate"
    assert d.state.state == gen.GENERATION_STATE_QUEUED and d.state.attempt == 2 and d.state.provider == "replicate"
    assert [a.provider for a in d.state.attempts] == ["bfl", "replicate"]
    assert d.state.version == 5 and failed_attempt(d.state) is None


def test_no_route_left_fails_with_the_last_error() -> None:
    planner = RoutePlanner(CircuitBreaker())
    job = handback()
    g = job.generation
    g.attempts.add(number=2, provider="replicate")
    g.attempts.add(number=3, provider="fal", error=gen.GenerationError(code="timeout", retryable=True))
    g.attempt = 3
    d = decide(job, planner)
    assert d.provider is None and d.state.state == gen.GENERATION_STATE_FAILED and d.state.error.code == "timeout"


def test_a_refusal_is_final_even_with_routes_left() -> None:
    d = decide(handback(retryable=False), RoutePlanner(CircuitBreaker()))
    assert d.provider is None and d.state.state == gen.GENERATION_STATE_FAILED
    assert d.state.error.code == "provider_unavailable" and not d.state.error.retryable


def test_a_report_without_a_failed_attempt_is_refused() -> None:
    planner = RoutePlanner(CircuitBreaker())
    queued = gen.Generation(id="gen_2", state=gen.GENERATION_STATE_QUEUED, attempt=1)
    queued.attempts.add(number=1, provider="bfl")
    for report in (queued, advance(queued, gen.GENERATION_STATE_RUNNING)):
        with pytest.raises(GatewayError) as exc:
            decide(events_pb2.GenerationJob(generation=report, routes=["bfl"]), planner)
        assert exc.value.code is ErrorCode.INVALID_REQUEST


def test_a_repeated_report_decides_the_same_once() -> None:
    decisions = AttemptDecisions(RoutePlanner(CircuitBreaker()))
    first, new = decisions.decide(handback())
    again, repeated = decisions.decide(handback())
    assert new and not repeated and again is first


async def test_outcomes_feed_the_breaker() -> None:
    from bus import Record

    breaker = CircuitBreaker(failure_threshold=2)
    planner = RoutePlanner(breaker)
    decide(handback("bfl"), planner)
    decide(handback("bfl"), planner)
    assert breaker.state("bfl") is Circuit.OPEN
    decide(handback("replicate", retryable=False), planner)  # a refusal is not an outage
    assert breaker.state("replicate") is Circuit.CLOSED
    done = gen.Generation(state=gen.GENERATION_STATE_SUCCEEDED, provider="bfl")
    event = events_pb2.GenerationEvent(generation=done)
    await SuccessObserver(planner).handle(Record(topic="events", partition=0, offset=0, key="g", message=event))
    assert breaker.state("bfl") is Circuit.CLOSED


def test_catalog_route_weights_are_checked_and_used() -> None:
    from routing.catalog import Catalog

    catalog = Catalog.load({"bfl", "replicate", "fal"})
    entry = catalog.get("flux-1.1-pro")
    assert entry.route_weights == {"bfl": 1, "replicate": 0, "fal": 0}
    planner = RoutePlanner(CircuitBreaker(), random.Random(1))
    assert {planner.plan(routes_for(catalog.routes(entry), entry.route_weights))[0] for _ in range(50)} == {"bfl"}
    with pytest.raises(ValueError, match="route_weights"):
        type(entry).model_validate({**entry.model_dump(), "route_weights": {"openai": 1}})

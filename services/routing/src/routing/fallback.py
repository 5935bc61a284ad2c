"""Fallback re-dispatch: routing's consumer of the events topic.

A worker whose attempt fails retryably while the generation still has untried routes
hands it back: state QUEUED, the failed attempt recorded with its error. This consumer
(group `pixelmesh-routing-fallback`, so one routing replica acts on each generation) sends
it to the next route whose circuit is closed, or ends it FAILED with the last error when
no route is left. Every attempt's outcome also feeds the circuit breakers.
"""

from __future__ import annotations

from dataclasses import dataclass

from bus import EVENTS_TOPIC, EventHeaders, Producer, Record, advance, generation_event, requests_topic
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from routing.routes import REROUTES, RoutePlanner
from svckit.logging import get_logger

log = get_logger(__name__)
FALLBACK_GROUP = "pixelmesh-routing-fallback"
PRODUCER = "routing"


@dataclass(frozen=True)
class Decision:
    """What to do with a handed-back generation: its next state, and the job to send (if any)."""

    state: gen.Generation
    provider: str | None


def handed_back(generation: gen.Generation) -> gen.Attempt | None:
    """The failed attempt of a generation a worker handed back, else None."""
    if generation.state != gen.GENERATION_STATE_QUEUED or not generation.attempts:
        return None
    last = generation.attempts[-1]
    if last.number == generation.attempt and last.HasField("error") and last.error.code:
        return last
    return None


def decide(generation: gen.Generation, planner: RoutePlanner) -> Decision | None:
    failed = handed_back(generation)
    if failed is None:
        return None
    tried = {a.provider for a in generation.attempts}
    provider = planner.next_route(list(generation.routes), tried)
    if provider is None:
        final = advance(generation, gen.GENERATION_STATE_FAILED)
        final.error.CopyFrom(failed.error)
        return Decision(final, None)
    nxt = advance(generation)
    nxt.attempt = generation.attempt + 1
    nxt.provider = provider
    nxt.progress_percent = 0
    attempt = nxt.attempts.add(number=nxt.attempt, provider=provider)
    attempt.start_time.CopyFrom(nxt.update_time)
    return Decision(nxt, provider)


def observe(generation: gen.Generation, planner: RoutePlanner) -> None:
    """Feed the circuit breakers with the outcome the event reports, if any."""
    if generation.state == gen.GENERATION_STATE_SUCCEEDED:
        planner.breaker.record_success(generation.provider)
        return
    failed = handed_back(generation)
    if failed is None and generation.state == gen.GENERATION_STATE_FAILED and generation.attempts:
        last = generation.attempts[-1]
        failed = last if last.HasField("error") else None
    if failed is None:
        return
    if failed.error.retryable:
        planner.breaker.record_failure(failed.provider)
    else:
        planner.breaker.record_success(failed.provider)  # it answered: a refusal is not an outage


# States whose events can carry an attempt's outcome (a hand-back is QUEUED with an error).
_OUTCOME_STATES = frozenset(
    gen.GenerationState.Name(s).encode()
    for s in (gen.GENERATION_STATE_QUEUED, gen.GENERATION_STATE_SUCCEEDED, gen.GENERATION_STATE_FAILED)
)


def reports_outcome(headers) -> bool:  # noqa: ANN001
    """The events this consumer acts on: another service's QUEUED, SUCCEEDED or FAILED."""
    h = EventHeaders.of(headers)
    return not h.known or (h.state in _OUTCOME_STATES and h.producer != PRODUCER.encode())


class FallbackHandler:
    def __init__(self, planner: RoutePlanner, producer: Producer) -> None:
        self._planner = planner
        self._producer = producer

    async def handle(self, record: Record[events_pb2.GenerationEvent]) -> None:
        generation = record.message.generation
        if record.message.producer == PRODUCER:
            return  # our own re-dispatches and failures
        observe(generation, self._planner)
        decision = decide(generation, self._planner)
        if decision is None:
            return
        state = decision.state
        await self._producer.send(EVENTS_TOPIC, state.id, generation_event(state, PRODUCER))
        if decision.provider is None:
            log.warning("no route left", generation_id=state.id, code=state.error.code)
            return
        await self._producer.send(
            requests_topic(decision.provider), state.id, events_pb2.GenerationJob(generation=state)
        )
        REROUTES.labels(generation.provider, decision.provider).inc()
        log.info(
            "generation sent to its next route",
            generation_id=state.id,
            provider=decision.provider,
            attempt=state.attempt,
        )

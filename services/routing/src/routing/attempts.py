"""After an attempt: routing's decision on a worker's failure report, and the breakers' feed.

Workers report; routing decides. A worker whose attempt fails calls
`RoutingService.ReportAttemptFailure` with the error recorded on the attempt, and routing
alone chooses what happens next: when the error is retryable, the next route whose pool
takes work and whose circuit lets an attempt through (QUEUED, a new attempt, the job on
that pool's topic); otherwise, or with no route left, FAILED with the attempt's error.
Every failure report feeds the circuit breakers; successes reach them from the events
topic (group `pixelmesh-routing-outcomes`, SUCCEEDED events only, which only the worker
of the attempt writes).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from bus import EventHeaders, Record
from lifecycle import after_failure, failed_attempt
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from routing.routes import RoutePlanner
from svckit.errors import invalid

OUTCOMES_GROUP = "pixelmesh-routing-outcomes"
# Decisions remembered, so a repeated report (the worker retried it) decides the same.
_REMEMBERED = 10_000


@dataclass(frozen=True)
class Decision:
    """What happens next: the generation's next state, and the pool its job goes to (if any)."""

    state: gen.Generation
    provider: str | None


def decide(job: events_pb2.GenerationJob, planner: RoutePlanner) -> Decision:
    """The next route of the job's plan, or FAILED with the attempt's error (a refusal is
    final: no reroute). The failure feeds the provider's circuit breaker first."""
    generation = job.generation
    failed = failed_attempt(generation)
    if failed is None:
        raise invalid("The report names no failed attempt (attempts[attempt] has no error).", "generation.attempts")
    observe_failure(failed, planner)
    tried = {a.provider for a in generation.attempts}
    provider = planner.next_route(list(job.routes), tried) if failed.error.retryable else None
    return Decision(after_failure(generation, failed, provider), provider)


def observe_failure(attempt: gen.Attempt, planner: RoutePlanner) -> None:
    if attempt.error.retryable:
        planner.breaker.record_failure(attempt.provider)
    else:
        planner.breaker.record_success(attempt.provider)  # it answered: a refusal is not an outage


class AttemptDecisions:
    """Decides on failure reports, once per (generation, attempt) within this replica's memory."""

    def __init__(self, planner: RoutePlanner) -> None:
        self._planner = planner
        self._decided: OrderedDict[tuple[str, int], Decision] = OrderedDict()

    def decide(self, job: events_pb2.GenerationJob) -> tuple[Decision, bool]:
        """The decision, and whether it is new (False: a repeated report, already published)."""
        key = (job.generation.id, job.generation.attempt)
        if (earlier := self._decided.get(key)) is not None:
            return earlier, False
        decision = decide(job, self._planner)
        self._decided[key] = decision
        if len(self._decided) > _REMEMBERED:
            self._decided.popitem(last=False)
        return decision, True

    def forget(self, generation: gen.Generation) -> None:
        """Publishing the decision failed: a retried report decides again."""
        self._decided.pop((generation.id, generation.attempt), None)


_SUCCEEDED = gen.GenerationState.Name(gen.GENERATION_STATE_SUCCEEDED).encode()


def reports_success(headers) -> bool:  # noqa: ANN001
    """The events the outcomes consumer decodes: SUCCEEDED only (by its header)."""
    h = EventHeaders.of(headers)
    return not h.known or h.state == _SUCCEEDED


class SuccessObserver:
    """A success closes the provider's circuit (a half-open probe that worked, say)."""

    def __init__(self, planner: RoutePlanner) -> None:
        self._planner = planner

    async def handle(self, record: Record[events_pb2.GenerationEvent]) -> None:
        generation = record.message.generation
        if generation.state == gen.GENERATION_STATE_SUCCEEDED and generation.provider:
            self._planner.breaker.record_success(generation.provider)

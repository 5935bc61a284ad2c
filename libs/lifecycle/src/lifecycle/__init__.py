"""A generation's lifecycle: its states, and the rules every service applies to them.

The one place that says what a generation may become and how a new state is made:

    QUEUED --(a worker takes the job)--> RUNNING --(progress)--> RUNNING --> SUCCEEDED
      ^                                     |
      +--(a retryable failure, a route left: routing sends the next attempt)
    QUEUED | RUNNING --(a final failure, or no route left: routing)--> FAILED
    QUEUED | RUNNING --(the owner cancels: routing)--> CANCELLED

Every change is a full copy of the generation one version newer (`advance`). Who writes
which change is fixed: routing admits (QUEUED), reroutes, fails and cancels; the worker of
the current attempt writes RUNNING, its progress and SUCCEEDED, and reports a failed
attempt to routing (`attempt_failed`). Every reader keeps the same state (`supersede`).
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from pixelmesh.common.v1 import generation_pb2 as gen

TERMINAL_STATES = frozenset(
    {gen.GENERATION_STATE_SUCCEEDED, gen.GENERATION_STATE_FAILED, gen.GENERATION_STATE_CANCELLED}
)


def now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def is_terminal(generation: gen.Generation) -> bool:
    return generation.state in TERMINAL_STATES


def advance(generation: gen.Generation, state: gen.GenerationState.ValueType | None = None) -> gen.Generation:
    """A copy of the generation, one version newer, in `state` (or the same state)."""
    nxt = gen.Generation()
    nxt.CopyFrom(generation)
    nxt.version = generation.version + 1
    ts = now()
    nxt.update_time.CopyFrom(ts)
    if state is not None:
        nxt.state = state
        if state == gen.GENERATION_STATE_RUNNING and not nxt.HasField("start_time"):
            nxt.start_time.CopyFrom(ts)
        if state in TERMINAL_STATES:
            nxt.end_time.CopyFrom(ts)
    return nxt


def supersede(current: gen.Generation | None, incoming: gen.Generation) -> gen.Generation | None:
    """The state a reader keeps when `incoming` arrives after `current`, or None to ignore it.

    Every reader of the events topic (status, pricing, webhooks, routing) applies this one
    rule to the same per-generation order (one key, one partition), so they all agree:
    - a newer version of a non-terminal state replaces it;
    - the first terminal state wins, whatever its version: a cancel, written by routing
      while the worker's latest version is on its way, still ends the generation; its
      version is lifted above the current one so watchers see a change;
    - after that, only newer versions of the same terminal state apply; any other state is
      ignored, terminal states never go back.
    """
    if current is None:
        return incoming
    if is_terminal(current):
        if incoming.state == current.state and incoming.version > current.version:
            return incoming
        return None
    if is_terminal(incoming):
        if incoming.version <= current.version:
            lifted = gen.Generation()
            lifted.CopyFrom(incoming)
            lifted.version = current.version + 1
            return lifted
        return incoming
    return incoming if incoming.version > current.version else None


def current_attempt(generation: gen.Generation, provider: str) -> gen.Attempt:
    """The attempt record of the generation's current try (created when none was planned)."""
    number = generation.attempt or 1
    for attempt in generation.attempts:
        if attempt.number == number:
            return attempt
    attempt = generation.attempts.add(number=number, provider=provider)
    attempt.start_time.CopyFrom(generation.update_time)
    return attempt


def attempt_failed(generation: gen.Generation, provider: str, error: gen.GenerationError) -> gen.Generation:
    """A worker's report of its failed attempt: the generation as it was, the error and end
    time on the current attempt. Not a state: routing decides what follows (`after_failure`)."""
    report = gen.Generation()
    report.CopyFrom(generation)
    attempt = current_attempt(report, provider)
    attempt.error.CopyFrom(error)
    attempt.end_time.CopyFrom(now())
    return report


def failed_attempt(generation: gen.Generation) -> gen.Attempt | None:
    """The generation's current attempt, when it ended with an error."""
    for attempt in generation.attempts:
        if attempt.number == generation.attempt and attempt.error.code:
            return attempt
    return None


def after_failure(report: gen.Generation, failed: gen.Attempt, next_provider: str | None) -> gen.Generation:
    """What follows a failed attempt: QUEUED as a new attempt on `next_provider`, or FAILED
    with the attempt's error when there is none (routing picks it, None for a final error)."""
    if next_provider is None:
        final = advance(report, gen.GENERATION_STATE_FAILED)
        final.error.CopyFrom(failed.error)
        return final
    nxt = advance(report, gen.GENERATION_STATE_QUEUED)
    nxt.attempt = report.attempt + 1
    nxt.provider = next_provider
    nxt.progress_percent = 0
    attempt = nxt.attempts.add(number=nxt.attempt, provider=next_provider)
    attempt.start_time.CopyFrom(nxt.update_time)
    return nxt


def cancelled(current: gen.Generation, error: gen.GenerationError) -> gen.Generation:
    """CANCELLED, one version above the state the canceller knows."""
    state = advance(current, gen.GENERATION_STATE_CANCELLED)
    state.error.CopyFrom(error)
    return state

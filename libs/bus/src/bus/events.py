"""Generation events on the bus: the event message and the headers that let a consumer skip
what it does not act on. The states and their rules are the lifecycle package's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lifecycle import TERMINAL_STATES, now
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2


def generation_event(generation: gen.Generation, producer: str) -> events_pb2.GenerationEvent:
    return events_pb2.GenerationEvent(generation=generation, producer=producer, emit_time=now())


# Headers of every GenerationEvent record, so that a consumer can skip the events it does
# not act on without parsing the generation (every consumer group reads every event).
STATE_HEADER = "pixelmesh-state"
PRODUCER_HEADER = "pixelmesh-producer"
# Present ("1") when the generation has a callback_url (the webhook dispatcher's events).
CALLBACK_HEADER = "pixelmesh-callback"


def event_headers(event: events_pb2.GenerationEvent) -> list[tuple[str, bytes]]:
    headers = [
        (STATE_HEADER, gen.GenerationState.Name(event.generation.state).encode()),
        (PRODUCER_HEADER, event.producer.encode()),
    ]
    if event.generation.params.callback_url:
        headers.append((CALLBACK_HEADER, b"1"))
    return headers


_TERMINAL_NAMES = frozenset(gen.GenerationState.Name(s).encode() for s in TERMINAL_STATES)


@dataclass(frozen=True)
class EventHeaders:
    """The headers event_headers() wrote; `known` is False for a record without them (written
    by an older producer), which a filter must then let through to be decoded."""

    state: bytes = b""
    producer: bytes = b""
    callback: bool = False
    known: bool = False

    @classmethod
    def of(cls, headers: Sequence[tuple[str, bytes]] | None) -> EventHeaders:
        values = dict(headers or ())
        state = values.get(STATE_HEADER)
        if state is None:
            return cls()
        return cls(state, values.get(PRODUCER_HEADER, b""), values.get(CALLBACK_HEADER) == b"1", True)

    @property
    def terminal(self) -> bool:
        return self.state in _TERMINAL_NAMES

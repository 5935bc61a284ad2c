"""Settlement: the events topic drives captures and releases.

Pricing reads pixelmesh.generation.events in its own consumer group, one record at a
time (so one generation's events are applied in their partition order), and applies
terminal states only: SUCCEEDED captures, FAILED and CANCELLED release. The ledger lets
the first terminal state win and ignores the rest (lifecycle.supersede's rule), and a record
redelivered after a crash finds its movement already written, so it changes nothing.
Generations this database never reserved (another ledger's, or older than the ledger)
are skipped.
"""

from __future__ import annotations

from bus import EVENTS_TOPIC, Consumer, EventHeaders, Producer, Record
from lifecycle import is_terminal
from pixelmesh.events.v1 import events_pb2
from pricing.ledger import Ledger

DEFAULT_GROUP = "pixelmesh-pricing-ledger"


def settles(headers) -> bool:  # noqa: ANN001
    """Only terminal states move money: the others are skipped undecoded."""
    h = EventHeaders.of(headers)
    return not h.known or h.terminal


class Settler:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def handle(self, record: Record[events_pb2.GenerationEvent]) -> None:
        generation = record.message.generation
        if not generation.id or not is_terminal(generation):
            return
        await self._ledger.settle(generation)


def settlement_consumer(
    ledger: Ledger, producer: Producer, bootstrap_servers: str, group_id: str = DEFAULT_GROUP
) -> Consumer[events_pb2.GenerationEvent]:
    return Consumer(
        bootstrap_servers=bootstrap_servers,
        topic=EVENTS_TOPIC,
        group_id=group_id,
        message_type=events_pb2.GenerationEvent,
        handler=Settler(ledger).handle,
        producer=producer,
        max_in_flight=1,
        handler_attempts=5,
        client_id="pricing-ledger",
        accept=settles,  # no max_delay_seconds: an open reservation counts against the key's concurrency
    )

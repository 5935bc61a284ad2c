"""The read model: the latest state of every generation, rebuilt from the events topic,
with its webhook deliveries from their own topic (pixelmesh.webhook.deliveries).

States are kept by `lifecycle.supersede` (newer versions win, the first terminal state wins,
terminal states never go back), so replays and redelivered events are harmless. Webhook
deliveries are a log beside the state, not a state: each is attached to its generation
once (by state and attempt number), before or after the generation itself arrives.

Reads are scoped to an account (`account`: an account id, or svckit.accounts.ALL_ACCOUNTS):
another account's generation is NOT_FOUND, exactly like a missing one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from lifecycle import is_terminal, supersede
from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.accounts import ALL_ACCOUNTS
from svckit.errors import ErrorCode, GatewayError
from svckit.ids import generation_id_time_ms

# A generation id younger than this that we have not seen yet is probably still on its
# way through the events topic: lookups wait for it instead of answering NOT_FOUND.
IN_FLIGHT_WINDOW_MS = 30_000
UNKNOWN_WAIT_SECONDS = 3.0


def _same(a: gen.WebhookDelivery, b: gen.WebhookDelivery) -> bool:
    return a.state == b.state and a.number == b.number


def _attach(generation: gen.Generation, deliveries: Iterable[gen.WebhookDelivery]) -> bool:
    """Add the deliveries the generation does not show yet; True when one was added."""
    added = False
    for delivery in deliveries:
        if not any(_same(d, delivery) for d in generation.webhook_deliveries):
            generation.webhook_deliveries.add().CopyFrom(delivery)
            added = True
    return added


def visible(generation: gen.Generation, account: str) -> bool:
    return account == ALL_ACCOUNTS or generation.account_id == account


class GenerationStore:
    def __init__(self) -> None:
        self._generations: dict[str, gen.Generation] = {}
        self._changed: dict[str, asyncio.Event] = {}
        # Deliveries read before their generation (the two topics are read apart).
        self._early_deliveries: dict[str, list[gen.WebhookDelivery]] = {}

    def __len__(self) -> int:
        return len(self._generations)

    def apply(self, generation: gen.Generation) -> bool:
        """Keep the state if it is newer; wake the watchers. True when applied."""
        current = self._generations.get(generation.id)
        kept = supersede(current, generation)
        if kept is None:
            return False
        if current is not None:
            _attach(kept, current.webhook_deliveries)
        _attach(kept, self._early_deliveries.pop(generation.id, ()))
        self._generations[generation.id] = kept
        self._wake(generation.id)
        return True

    def apply_delivery(self, generation_id: str, delivery: gen.WebhookDelivery) -> None:
        """A webhook attempt, shown on its generation (once, however often it is read)."""
        current = self._generations.get(generation_id)
        if current is None:
            early = self._early_deliveries.setdefault(generation_id, [])
            if not any(_same(d, delivery) for d in early):
                early.append(delivery)
        elif _attach(current, [delivery]):
            self._wake(generation_id)

    def _wake(self, generation_id: str) -> None:
        event = self._changed.pop(generation_id, None)
        if event is not None:
            event.set()

    def peek(self, generation_id: str, account: str = ALL_ACCOUNTS) -> gen.Generation | None:
        found = self._generations.get(generation_id)
        return found if found is not None and visible(found, account) else None

    async def get(self, generation_id: str, account: str = ALL_ACCOUNTS) -> gen.Generation:
        found = self._generations.get(generation_id)
        born = generation_id_time_ms(generation_id)
        if found is None and born is not None and time.time() * 1000 - born < IN_FLIGHT_WINDOW_MS:
            deadline = time.monotonic() + UNKNOWN_WAIT_SECONDS
            while found is None and (left := deadline - time.monotonic()) > 0:
                await self.changed(generation_id, left)
                found = self._generations.get(generation_id)
        if found is None or not visible(found, account):
            raise GatewayError(ErrorCode.NOT_FOUND, f"No generation found with id '{generation_id}'.")
        return found

    async def newer_than(self, generation_id: str, version: int, timeout: float) -> gen.Generation | None:
        """The generation once its version exceeds `version`, or its current state at the timeout.

        Checking and then waiting happen without an await in between, so no change slips by.
        """
        deadline = time.monotonic() + timeout
        while True:
            current = self._generations.get(generation_id)
            if current is not None and current.version > version:
                return current
            left = deadline - time.monotonic()
            if left <= 0:
                return current
            await self.changed(generation_id, left)

    async def changed(self, generation_id: str, timeout: float | None) -> None:
        """Wait until the generation changes (or the timeout passes)."""
        event = self._changed.setdefault(generation_id, asyncio.Event())
        try:
            async with asyncio.timeout(timeout):  # not wait_for, which loses cancels on 3.11
                await event.wait()
        except TimeoutError:
            pass

    async def caught_up_with(self, incoming: gen.Generation, timeout: float) -> gen.Generation | None:
        """The kept state once it includes `incoming` (same or newer version, or a terminal
        state), or whatever is kept at the timeout. For readers of the events topic other
        than the store's own (the webhook consumer group, a cancel awaiting its event)."""
        deadline = time.monotonic() + timeout
        while True:
            current = self._generations.get(incoming.id)
            if current is not None and (is_terminal(current) or current.version >= incoming.version):
                return current
            left = deadline - time.monotonic()
            if left <= 0:
                return current
            await self.changed(incoming.id, left)

    async def terminal(self, generation_id: str, timeout: float) -> gen.Generation | None:
        """The generation once it is in a terminal state, or what is kept at the timeout."""
        deadline = time.monotonic() + timeout
        current = self._generations.get(generation_id)
        while current is None or not is_terminal(current):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if current is None:
                await self.changed(generation_id, left)
                current = self._generations.get(generation_id)
            else:
                current = await self.newer_than(generation_id, current.version, left)
        return current

    def list(self, account: str, page_size: int = 50, after_id: str = "") -> list[gen.Generation]:
        """The account's generations (every account's with ALL_ACCOUNTS), newest first (ids sort by creation time)."""
        ids = sorted((i for i, g in self._generations.items() if visible(g, account)), reverse=True)
        if after_id:
            ids = [i for i in ids if i < after_id]
        return [self._generations[i] for i in ids[:page_size]]

"""Webhooks: a signed POST to the generation's callback_url on its terminal state.

The dispatcher is its own consumer group (`pixelmesh-webhooks`) on the events topic. Every
attempt is recorded on its own topic (pixelmesh.webhook.deliveries), never as a state of
the generation: the read model shows the attempts as the generation's
`webhook_deliveries`, so they are visible to clients and survive restarts. A redelivered
event first looks at what was already attempted (the read model, plus what this process
wrote and has not read back yet) and never delivers a delivered state again; retries
resume on the recorded schedule.

Signature: `X-Pixelmesh-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
with the timestamp (unix seconds) in `X-Pixelmesh-Timestamp`; the secret of an API key is
HMAC-SHA256(WEBHOOK_SIGNING_KEY, api_key_id), readable by its owner at
GET /api/v2/webhooks/secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from bus import WEBHOOK_DELIVERIES_TOPIC, EventHeaders, Producer, Record
from lifecycle import is_terminal
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from presenters import kling, mj, v2
from presenters.generation import state_name
from status.core import GenerationStore
from svckit.logging import get_logger

log = get_logger(__name__)

GROUP = "pixelmesh-webhooks"
SECRET_PREFIX = "whsec_"
# How long an event of the consumer group may wait for the read model to include it.
CATCH_UP_SECONDS = 30.0
_REMEMBERED = 10_000

ImageUrl = Callable[[gen.ImageRef], Awaitable[str]]


def secret_for(signing_key: str, api_key_id: str) -> str:
    """The webhook secret of one API key, derived so that nothing needs storing."""
    return SECRET_PREFIX + hmac.new(signing_key.encode(), api_key_id.encode(), hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff (first_delay, doubling, capped at max_delay) inside a window that
    starts when the generation reached its terminal state."""

    window_seconds: float = 600.0
    first_delay: float = 1.0
    max_delay: float = 60.0

    def delay_after(self, attempts: int) -> float:
        return min(self.first_delay * 2 ** max(0, attempts - 1), self.max_delay)

    def next_attempt_at(
        self, generation: gen.Generation, attempts: list[gen.WebhookDelivery], now: float
    ) -> float | None:
        """When the next attempt is due (unix seconds), or None once the window is over."""
        start = _seconds(generation.end_time) or (_seconds(attempts[0].time) if attempts else now)
        due = _seconds(attempts[-1].time) + self.delay_after(len(attempts)) if attempts else now
        return due if due <= start + self.window_seconds else None


def _seconds(ts) -> float:
    return ts.seconds + ts.nanos / 1e9


def attempts_of(generation: gen.Generation) -> list[gen.WebhookDelivery]:
    """The deliveries that announced the generation's current (terminal) state."""
    return [d for d in generation.webhook_deliveries if d.state == generation.state]


def webhook_json(generation: gen.Generation, urls: list[str]) -> dict:
    """The body: the /api/v2/generate object, the Midjourney task for notifyHook, or the
    Kling task for a Kling route's callback_url."""
    if generation.params.webhook_format == "mj":
        return mj.mj_task(generation, urls)
    if generation.params.webhook_format == "kling":
        return kling.kling_task(generation, urls)
    return v2.v2_generation(generation, urls)


def announces(headers) -> bool:  # noqa: ANN001
    """The events that may need a delivery: a terminal state of a generation with a callback_url."""
    h = EventHeaders.of(headers)
    return not h.known or (h.terminal and h.callback)


class WebhookDispatcher:
    def __init__(
        self,
        *,
        store: GenerationStore,
        producer: Producer,
        image_url: ImageUrl,
        signing_key: str,
        policy: RetryPolicy,
        client: httpx.AsyncClient,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._store = store
        self._producer = producer
        self._image_url = image_url
        self._signing_key = signing_key
        self._policy = policy
        self._client = client
        self._timeout = timeout_seconds
        self._active: set[tuple[str, int]] = set()
        # States this process wrote, until the read model has them too.
        self._written: OrderedDict[str, gen.Generation] = OrderedDict()

    async def handle(self, record: Record[events_pb2.GenerationEvent]) -> None:
        incoming = record.message.generation
        if not is_terminal(incoming) or not incoming.params.callback_url:
            return
        key = (incoming.id, incoming.state)
        if key in self._active:
            return
        current = self._newest(await self._store.caught_up_with(incoming, CATCH_UP_SECONDS))
        if current is None or current.state != incoming.state or key in self._active:
            return  # another terminal state won (a cancel raced the result), or already at work
        self._active.add(key)
        try:
            await self.deliver(current)
        finally:
            self._active.discard(key)

    async def deliver(self, generation: gen.Generation) -> gen.Generation:
        """Attempt until delivered or the retry window is over; returns the last state."""
        current = generation
        while True:
            attempts = attempts_of(current)
            if any(d.delivered for d in attempts):
                return current
            now = time.time()
            due = self._policy.next_attempt_at(current, attempts, now)
            if due is None:
                log.warning("webhook given up", generation_id=current.id, attempts=len(attempts))
                return current
            if due > now:
                await asyncio.sleep(due - now)
            delivery = await self._post(current, len(attempts) + 1)
            current = await self._record(current, delivery)

    async def _post(self, generation: gen.Generation, number: int) -> gen.WebhookDelivery:
        delivery = gen.WebhookDelivery(number=number, state=generation.state)
        delivery.time.GetCurrentTime()
        try:
            urls = []
            if generation.state == gen.GENERATION_STATE_SUCCEEDED:
                urls = list(await asyncio.gather(*(self._image_url(ref) for ref in generation.images)))
            body = json.dumps(webhook_json(generation, urls), separators=(",", ":")).encode()
        except Exception as exc:  # storage unreachable: counts as a failed attempt, retried
            delivery.error = f"could not render the body: {exc!r}"[:500]
            return delivery
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "pixelmesh-webhooks/1",
            v2.WEBHOOK_TIMESTAMP_HEADER: timestamp,
            v2.WEBHOOK_SIGNATURE_HEADER: sign(secret_for(self._signing_key, generation.api_key_id), timestamp, body),
            v2.WEBHOOK_DELIVERY_HEADER: f"{generation.id}.{state_name(generation)}",
            v2.WEBHOOK_ATTEMPT_HEADER: str(number),
        }
        try:
            response = await self._client.post(
                generation.params.callback_url, content=body, headers=headers, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"[:500]
        else:
            delivery.status_code = response.status_code
            delivery.delivered = 200 <= response.status_code < 300
            if not delivery.delivered:
                delivery.error = f"the receiver answered HTTP {response.status_code}"
        log.info(
            "webhook attempt",
            generation_id=generation.id,
            attempt=number,
            status_code=delivery.status_code,
            delivered=delivery.delivered,
        )
        return delivery

    async def _record(self, generation: gen.Generation, delivery: gen.WebhookDelivery) -> gen.Generation:
        """The attempt on the deliveries topic; the generation as it shows it (same state and version)."""
        annotated = gen.Generation()
        annotated.CopyFrom(generation)
        annotated.webhook_deliveries.append(delivery)
        record = events_pb2.WebhookDeliveryRecord(generation_id=generation.id, delivery=delivery)
        await self._producer.send(WEBHOOK_DELIVERIES_TOPIC, generation.id, record)
        self._written[annotated.id] = annotated
        self._written.move_to_end(annotated.id)
        while len(self._written) > _REMEMBERED:
            self._written.popitem(last=False)
        return annotated

    def _newest(self, kept: gen.Generation | None) -> gen.Generation | None:
        if kept is None:
            return None
        written = self._written.get(kept.id)
        if written is not None and written.state == kept.state and len(attempts_of(written)) > len(attempts_of(kept)):
            return written  # attempts this process made that the read model has not read back yet
        return kept

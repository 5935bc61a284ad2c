"""Server-sent events from an upstream (OpenAI's streaming image events).

`Upstream.request` reads whole bodies; a stream must be handed over as it arrives, so
`open_stream` sends with `stream=True` and applies the same rules to the response head:
429 / 5xx / unreachable are retried with backoff (honouring Retry-After) within the
budget, other failures are classified by the upstream's own `error_of`. Once a 2xx head
arrives the stream is never re-sent: a second request would be a second paid generation.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from svckit.errors import ErrorCode
from svckit.logging import get_logger
from worker.providers.base import ProviderError
from worker.providers.upstream import RETRYABLE_STATUSES, Upstream, retry_after_seconds

log = get_logger(__name__)


@dataclass(frozen=True)
class Event:
    event: str
    data: str

    def json(self) -> dict:
        try:
            body = json.loads(self.data)
        except ValueError as exc:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "the upstream sent an event that is not JSON") from exc
        if not isinstance(body, dict):
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "the upstream sent an event that is not a JSON object")
        return body


@asynccontextmanager
async def open_stream(upstream: Upstream, method: str, url: str, **kwargs) -> AsyncIterator[httpx.Response]:
    """A 2xx streaming response (closed on exit), or a classified ProviderError."""
    retry = upstream.retry
    deadline = time.monotonic() + retry.budget_seconds
    attempt = 0
    cause: Exception  # the transport error, or the ProviderError of a retryable response
    while True:
        try:
            response = await upstream.client.send(upstream.client.build_request(method, url, **kwargs), stream=True)
        except httpx.TimeoutException as exc:
            failure = ProviderError(ErrorCode.TIMEOUT, f"{upstream.provider} did not answer in time", retryable=True)
            wait, cause = retry.backoff(attempt), exc
        except httpx.TransportError as exc:
            failure = ProviderError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"{upstream.provider} is unreachable ({type(exc).__name__})",
                retryable=True,
            )
            wait, cause = retry.backoff(attempt), exc
        else:
            if response.is_success:
                try:
                    yield response
                finally:
                    await response.aclose()
                return
            try:
                await response.aread()
            finally:
                await response.aclose()
            failure = upstream.error_of(response)
            if response.status_code not in RETRYABLE_STATUSES:
                raise failure
            hinted = retry_after_seconds(response)
            wait = hinted if hinted is not None else retry.backoff(attempt)
            cause = failure
        attempt += 1
        if attempt >= retry.max_attempts or time.monotonic() + wait > deadline:
            raise failure from cause
        log.info("retrying upstream stream", provider=upstream.provider, attempt=attempt, wait_s=round(wait, 2))
        await asyncio.sleep(wait)


async def events(response: httpx.Response, provider: str) -> AsyncIterator[Event]:
    """The SSE events of a response body (`event:` / `data:` lines, blank-line separated)."""
    data: list[str]
    name, data = "", []
    try:
        async for line in response.aiter_lines():
            if not line:
                if data:
                    yield Event(name or "message", "\n".join(data))
                name, data = "", []
            elif line.startswith(":"):
                continue  # comment / keep-alive
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
        if data:
            yield Event(name or "message", "\n".join(data))
    except httpx.TimeoutException as exc:
        raise ProviderError(ErrorCode.TIMEOUT, f"{provider} stopped sending events", retryable=True) from exc
    except httpx.TransportError as exc:
        raise ProviderError(
            ErrorCode.PROVIDER_UNAVAILABLE,
            f"{provider} broke off the event stream ({type(exc).__name__})",
            retryable=True,
        ) from exc

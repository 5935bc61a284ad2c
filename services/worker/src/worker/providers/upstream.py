"""HTTP to an upstream provider: retries, error classification, bounded downloads.

Every adapter talks to its upstream through one `Upstream`:
- 429, 5xx and transport errors are retried with exponential backoff and full jitter,
  honouring `Retry-After` (seconds or an HTTP date), within a time budget;
- other 4xx are not retried; they become `ProviderError`s with gateway codes (an adapter
  may recognise its upstream's refusals first, through its `classify`);
- the upstream key never appears in an error, a log line or an event: errors carry the
  status and the upstream's own message, with the key scrubbed out if it was echoed.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client import Histogram

from svckit.errors import ErrorCode
from svckit.logging import get_logger
from worker.providers.base import ProviderError

log = get_logger(__name__)

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529})
MAX_MESSAGE_CHARS = 300

UPSTREAM_SECONDS = Histogram(
    "pixelmesh_upstream_request_duration_seconds",
    "One HTTP call to an upstream provider API",
    ["provider", "method", "status"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

# Gives an adapter the first look at a failed response: a ProviderError, or None for the
# generic mapping.
Classifier = Callable[[httpx.Response], ProviderError | None]


@dataclass(frozen=True)
class RetryPolicy:
    # Total time spent retrying one call before giving up (the call itself excluded).
    budget_seconds: float = 60.0
    base_seconds: float = 0.5
    max_backoff_seconds: float = 20.0
    max_attempts: int = 8

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0, min(self.max_backoff_seconds, self.base_seconds * 2**attempt))


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Upstream:
    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        auth: httpx.Auth | None = None,
        secret: str = "",
        retry: RetryPolicy | None = None,
        timeout: float = 120.0,
        classify: Classifier | None = None,
        max_connections: int = 200,
    ) -> None:
        self.provider = provider
        self._secret = secret
        self.retry = retry or RetryPolicy()
        self._classify = classify
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers or {},
            auth=auth,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=True,
        )
        # Result URLs live on other hosts (CDNs, signed buckets): fetched without the
        # provider's credentials, which must never leave for a host we did not choose.
        self._downloads = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=max_connections),
            follow_redirects=True,
        )
        # Requests beyond the pool wait here, not in httpcore's pool queue: the pool scans
        # every queued request against every connection each time one starts or ends, which
        # costs a worker holding a thousand polling jobs more CPU than the jobs themselves.
        self._slots = asyncio.Semaphore(max_connections)
        self._download_slots = asyncio.Semaphore(max_connections)

    async def close(self) -> None:
        await self.client.aclose()
        await self._downloads.aclose()

    async def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        """Send, retrying what is retryable; a 2xx response, or a classified ProviderError."""
        deadline = time.monotonic() + self.retry.budget_seconds
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                async with self._slots:
                    response = await self.client.request(method, url, **kwargs)
            except httpx.TimeoutException as exc:
                UPSTREAM_SECONDS.labels(self.provider, method, "timeout").observe(time.monotonic() - started)
                failure = ProviderError(ErrorCode.TIMEOUT, f"{self.provider} did not answer in time", retryable=True)
                wait = self.retry.backoff(attempt)
                cause: BaseException = exc
            except httpx.TransportError as exc:
                UPSTREAM_SECONDS.labels(self.provider, method, "unreachable").observe(time.monotonic() - started)
                failure = ProviderError(
                    ErrorCode.PROVIDER_UNAVAILABLE,
                    f"{self.provider} is unreachable ({type(exc).__name__})",
                    retryable=True,
                )
                wait = self.retry.backoff(attempt)
                cause = exc
            else:
                UPSTREAM_SECONDS.labels(self.provider, method, str(response.status_code)).observe(
                    time.monotonic() - started
                )
                if response.is_success:
                    return response
                failure = self.error_of(response)
                # A refused key or account is not retried, whatever the status (Kling sends
                # its billing refusals as HTTP 429).
                if response.status_code not in RETRYABLE_STATUSES or failure.code is ErrorCode.PROVIDER_AUTH:
                    raise failure
                hinted = retry_after_seconds(response)
                wait = hinted if hinted is not None else self.retry.backoff(attempt)
                cause = failure
            attempt += 1
            if attempt >= self.retry.max_attempts or time.monotonic() + wait > deadline:
                raise failure from cause
            log.info(
                "retrying upstream call",
                provider=self.provider,
                attempt=attempt,
                wait_s=round(wait, 2),
                code=failure.code.value,
            )
            await asyncio.sleep(wait)

    def error_of(self, response: httpx.Response) -> ProviderError:
        """The gateway's reading of a failed upstream response."""
        if self._classify is not None and (classified := self._classify(response)) is not None:
            return ProviderError(classified.code, self.scrub(classified.message), retryable=classified.retryable)
        status = response.status_code
        detail = self.message_of(response)
        if status in (401, 403):
            return ProviderError(
                ErrorCode.PROVIDER_AUTH,
                f"{self.provider} refused the gateway's credentials (HTTP {status}); the operator must check its key",
                retryable=True,
            )
        if status == 429:
            return ProviderError(
                ErrorCode.PROVIDER_UNAVAILABLE, f"{self.provider} is rate limiting: {detail}", retryable=True
            )
        if status >= 500 or status in RETRYABLE_STATUSES:
            return ProviderError(
                ErrorCode.PROVIDER_UNAVAILABLE, f"{self.provider} failed (HTTP {status}): {detail}", retryable=True
            )
        if status in (400, 413, 422):
            return ProviderError(ErrorCode.INVALID_REQUEST, f"{self.provider} rejected the request: {detail}")
        if status == 402:
            return ProviderError(
                ErrorCode.PROVIDER_AUTH,
                f"{self.provider} refused the gateway's account (HTTP 402): {detail}",
                retryable=True,
            )
        return ProviderError(ErrorCode.PROVIDER_ERROR, f"{self.provider} answered HTTP {status}: {detail}")

    def message_of(self, response: httpx.Response) -> str:
        """The upstream's own error message, short, with the key scrubbed out."""
        try:
            body = response.json()
        except ValueError:
            text = response.text
        else:
            text = _find_message(body) or response.text
        return self.scrub(" ".join(text.split())[:MAX_MESSAGE_CHARS])

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text

    async def download(self, url: str, max_bytes: int) -> bytes:
        """Fetch a result URL at once (they expire upstream), refusing more than max_bytes."""
        deadline = time.monotonic() + self.retry.budget_seconds
        attempt = 0
        while True:
            try:
                async with self._download_slots, self._downloads.stream("GET", url) as resp:
                    if resp.is_success:
                        declared = int(resp.headers.get("content-length") or 0)
                        if declared > max_bytes:
                            raise ProviderError(
                                ErrorCode.PROVIDER_ERROR, f"{self.provider} result is larger than {max_bytes} bytes"
                            )
                        parts, size = [], 0
                        async for chunk in resp.aiter_bytes():
                            size += len(chunk)
                            if size > max_bytes:
                                raise ProviderError(
                                    ErrorCode.PROVIDER_ERROR, f"{self.provider} result is larger than {max_bytes} bytes"
                                )
                            parts.append(chunk)
                        return b"".join(parts)
                    status = resp.status_code
            except httpx.TransportError:
                status = 0
            if status and status not in RETRYABLE_STATUSES:
                raise ProviderError(
                    ErrorCode.PROVIDER_ERROR, f"downloading the {self.provider} result failed (HTTP {status})"
                )
            attempt += 1
            wait = self.retry.backoff(attempt)
            if attempt >= self.retry.max_attempts or time.monotonic() + wait > deadline:
                raise ProviderError(
                    ErrorCode.PROVIDER_UNAVAILABLE, f"downloading the {self.provider} result failed", retryable=True
                )
            await asyncio.sleep(wait)


def _find_message(body: object) -> str:
    """The message in the usual error shapes: {"error": {"message"}}, {"detail"}, {"message"}, {"errors": [...]}."""
    if isinstance(body, str):
        return body
    if isinstance(body, list):
        return "; ".join(filter(None, (_find_message(item) for item in body)))
    if isinstance(body, dict):
        for key in ("message", "detail", "error", "errors", "description", "failReason", "name"):
            if key in body and (found := _find_message(body[key])):
                return found
    return ""

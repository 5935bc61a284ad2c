"""Per-key limits, counted from the key's own reservations (so every replica agrees).

- images per minute: a sliding 60-second window over the images of every admitted
  request, whatever became of it (this limit protects capacity);
- images per day (UTC): images of the day's requests that were not released (a failed
  generation gives its quota back, as it gives its tokens back);
- concurrency: the key's reservations still open (queued or running).

A refusal is a RATE_LIMITED GatewayError whose metadata the edge turns into
`Retry-After` and `x-ratelimit-*` headers: retry_after_seconds, ratelimit_limit_requests,
ratelimit_remaining_requests, ratelimit_reset_requests (OpenAI's duration form, "12s").
"""

from __future__ import annotations

import itertools
import math

from sqlalchemy import Connection, bindparam, func, select

from pricing.db import reservations
from pricing.plans import Limits
from svckit.errors import ErrorCode, GatewayError

MINUTE_MS = 60_000
DAY_MS = 86_400_000


# Built once (the compiled-statement cache then hits on every call); bound per call.
_WINDOW = (
    select(reservations.c.created_ms, reservations.c.n)
    .where(reservations.c.api_key_id == bindparam("key_id"), reservations.c.created_ms > bindparam("minute_start"))
    .order_by(reservations.c.created_ms)
)
_MINUTE_USED = select(func.coalesce(func.sum(reservations.c.n), 0)).where(
    reservations.c.api_key_id == bindparam("key_id"), reservations.c.created_ms > bindparam("minute_start")
)
_DAY_USED = select(func.coalesce(func.sum(reservations.c.n), 0)).where(
    reservations.c.api_key_id == bindparam("key_id"),
    reservations.c.created_ms >= bindparam("day_start"),
    reservations.c.status != "released",
)
_RUNNING = select(func.count()).where(
    reservations.c.api_key_id == bindparam("key_id"), reservations.c.status == "reserved"
)
# One statement reads the counts of every limit the key has: (per minute, per day, running).
_USAGE = {
    wanted: select(
        *(q.scalar_subquery() for q, on in zip((_MINUTE_USED, _DAY_USED, _RUNNING), wanted, strict=True) if on)
    )
    for wanted in itertools.product((False, True), repeat=3)
    if any(wanted)
}


def _seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


def _limited(message: str, *, retry_ms: int, limit: int, remaining: int, reset_ms: int) -> GatewayError:
    return GatewayError(
        ErrorCode.RATE_LIMITED,
        message,
        retry_after_seconds=str(_seconds(retry_ms)),
        ratelimit_limit_requests=str(limit),
        ratelimit_remaining_requests=str(max(0, remaining)),
        ratelimit_reset_requests=f"{_seconds(reset_ms)}s",
    )


def check(conn: Connection, key_id: str, limits: Limits, n: int, now: int) -> None:
    """Raise RATE_LIMITED when `n` more images would break one of the key's limits."""
    wanted = (bool(limits.images_per_minute), bool(limits.images_per_day), bool(limits.max_concurrent))
    if not any(wanted):
        return
    params = {"key_id": key_id, "minute_start": now - MINUTE_MS, "day_start": now - now % DAY_MS}
    counts = iter(conn.execute(_USAGE[wanted], params).one())
    if limits.images_per_minute:
        _per_minute(conn, key_id, limits.images_per_minute, n, now, next(counts))
    if limits.images_per_day:
        _per_day(key_id, limits.images_per_day, n, now, next(counts))
    if limits.max_concurrent:
        _concurrent(key_id, limits.max_concurrent, next(counts))


def _per_minute(conn: Connection, key_id: str, limit: int, n: int, now: int, used: int) -> None:
    if used + n <= limit:
        return
    if n > limit:
        raise GatewayError(
            ErrorCode.INVALID_REQUEST, f"n={n} is more than this key's limit of {limit} images per minute.", param="n"
        )
    # The request fits once enough of the oldest images have left the window.
    window = conn.execute(_WINDOW, {"key_id": key_id, "minute_start": now - MINUTE_MS}).all()
    must_free, freed, free_at = used + n - limit, 0, now + MINUTE_MS
    for row in window:
        freed += row.n
        if freed >= must_free:
            free_at = row.created_ms + MINUTE_MS
            break
    retry_ms = free_at - now
    raise _limited(
        f"Rate limit reached for images per minute on key {key_id}: limit {limit}, used {used}, requested {n}. "
        f"Please try again in {_seconds(retry_ms)}s.",
        retry_ms=retry_ms,
        limit=limit,
        remaining=limit - used,
        reset_ms=window[0].created_ms + MINUTE_MS - now,
    )


def _per_day(key_id: str, limit: int, n: int, now: int, used: int) -> None:
    day_start = now - now % DAY_MS
    if used + n <= limit:
        return
    retry_ms = day_start + DAY_MS - now
    raise _limited(
        f"Daily quota reached on key {key_id}: limit {limit} images per day, used {used}, requested {n}. "
        f"The quota renews at 00:00 UTC, in {_seconds(retry_ms)}s.",
        retry_ms=retry_ms,
        limit=limit,
        remaining=limit - used,
        reset_ms=retry_ms,
    )


def _concurrent(key_id: str, limit: int, running: int) -> None:
    if running < limit:
        return
    raise _limited(
        f"Too many generations at once on key {key_id}: limit {limit} running or queued. "
        "Please try again when one of them has finished.",
        retry_ms=1000,
        limit=limit,
        remaining=0,
        reset_ms=1000,
    )

"""Spend per day, model and key: the captures of the ledger, summed."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select

from pricing.db import ledger_entries
from pricing.limits import DAY_MS
from sqlstore import Database
from svckit.errors import invalid

MAX_DAYS = 366
DEFAULT_DAYS = 30


@dataclass(frozen=True)
class UsageRow:
    date: str
    model: str
    api_key_id: str
    generations: int
    images: int
    tokens: int
    usd_micros: int


def _date(value: str, param: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise invalid(f"{param} must be a date as YYYY-MM-DD; got {value!r}.", param) from None


def period(start: str, end: str, today: dt.date) -> tuple[dt.date, dt.date]:
    """The inclusive UTC date range asked for (default: the last 30 days up to today)."""
    last = _date(end, "end_date") if end else today
    first = _date(start, "start_date") if start else last - dt.timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise invalid("start_date must not be after end_date.", "start_date")
    if (last - first).days >= MAX_DAYS:
        raise invalid(f"Ask for at most {MAX_DAYS} days at once.", "start_date")
    return first, last


def _ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


async def usage(database: Database, account_id: str, first: dt.date, last: dt.date) -> list[UsageRow]:
    le = ledger_entries
    day = (le.c.created_ms // DAY_MS).label("day")
    query = (
        select(
            day,
            le.c.model,
            le.c.api_key_id,
            func.count().label("generations"),
            func.sum(le.c.images).label("images"),
            func.sum(le.c.charged_tokens).label("tokens"),
            func.sum(le.c.charged_usd_micros).label("usd"),
        )
        .where(
            le.c.account_id == account_id,
            le.c.kind == "capture",
            le.c.created_ms >= _ms(first),
            le.c.created_ms < _ms(last + dt.timedelta(days=1)),
        )
        .group_by(day, le.c.model, le.c.api_key_id)
        .order_by(day, le.c.model, le.c.api_key_id)
    )
    rows = await database.run(lambda conn: conn.execute(query).all(), write=False)
    epoch = dt.date(1970, 1, 1)
    return [
        UsageRow(
            (epoch + dt.timedelta(days=int(r.day))).isoformat(),
            r.model,
            r.api_key_id,
            int(r.generations),
            int(r.images or 0),
            int(r.tokens or 0),
            int(r.usd or 0),
        )
        for r in rows
    ]

"""Reading server-sent events the way a browser's EventSource does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Event:
    event: str
    id: str | None
    data: str

    def json(self) -> dict:
        return json.loads(self.data)


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of a text/event-stream response, until the server ends it."""
    fields: dict[str, str] = {}
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data or fields:
                yield Event(fields.get("event", "message"), fields.get("id"), "\n".join(data))
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue  # comment (keep-alive ping)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    if data or fields:
        yield Event(fields.get("event", "message"), fields.get("id"), "\n".join(data))

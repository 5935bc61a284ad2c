"""Readable messages from the error bodies of upstreams built on FastAPI/pydantic (BFL, fal)
and RFC 7807 problem details (Replicate)."""

from __future__ import annotations

import httpx

MAX_CHARS = 300


def detail_message(body: object) -> str:
    """`{"detail": "..."}`, `{"detail": [{"loc": [...], "msg": "..."}]}`, or a problem's `detail`/`title`."""
    if isinstance(body, dict):
        detail = body.get("detail")
        if detail is None:
            detail = body.get("message") or body.get("title") or body.get("error")
        body = detail
    if isinstance(body, str):
        return body
    if isinstance(body, list):
        parts = []
        for item in body:
            if isinstance(item, dict):
                loc = [str(p) for p in item.get("loc", []) if p not in ("body", "query")]
                msg = str(item.get("msg", ""))
                parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(p for p in parts if p)
    return ""


def response_detail(response: httpx.Response) -> str:
    try:
        text = detail_message(response.json())
    except ValueError:
        text = ""
    text = text or response.text or f"HTTP {response.status_code}"
    return " ".join(text.split())[:MAX_CHARS]

"""Generation ids, shared by routing (which makes them) and status (which reads their age)."""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_generation_id(now_ms: int | None = None) -> str:
    """`gen_` + a ULID: 48 bits of milliseconds then 80 random bits, Crockford base32.

    Sortable by creation time and unique without coordination between routing replicas.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "gen_" + "".join(reversed(chars))


def generation_id_time_ms(generation_id: str) -> int | None:
    """The creation time encoded in a generation id, or None if it is not one of ours."""
    body = generation_id.removeprefix("gen_")
    if len(body) != 26 or not generation_id.startswith("gen_"):
        return None
    value = 0
    for ch in body[:10]:
        idx = _CROCKFORD.find(ch)
        if idx < 0:
            return None
        value = value * 32 + idx
    return value  # 10 chars = 50 bits: 2 zero bits of padding, then the 48-bit timestamp

"""Whose generations an internal read may see: the account named in the call's metadata.

The edge reads (and cancels) generations in status on behalf of the API key's account and
says so in `x-pixelmesh-account-id`; status then answers only that account's generations
(another's is NOT_FOUND, exactly like a missing one). A read that names no account is
refused. Reading every account's generations (`*`, an operator's tools) is an admin call:
it also carries the operator token (the one of pricing's admin RPCs, PRICING_ADMIN_TOKEN)
in `x-pixelmesh-admin-token`, and is refused without it.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

ACCOUNT_METADATA = "x-pixelmesh-account-id"
ADMIN_TOKEN_METADATA = "x-pixelmesh-admin-token"
ALL_ACCOUNTS = "*"

Metadata = tuple[tuple[str, str], ...]


def account_metadata(account_id: str) -> Metadata:
    """The metadata of a call made on behalf of one account."""
    return ((ACCOUNT_METADATA, account_id),)


def operator_metadata(admin_token: str) -> Metadata:
    """The metadata of an operator's call over every account's generations."""
    return ((ACCOUNT_METADATA, ALL_ACCOUNTS), (ADMIN_TOKEN_METADATA, admin_token))


def metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str:
    """The text value of `key` in a call's metadata ("" when absent; gRPC hands bytes only
    for "-bin" keys, which none of ours is)."""
    for k, value in metadata or ():
        if k == key and isinstance(value, str):
            return value
    return ""


def is_operator(metadata: Iterable[tuple[str, str | bytes]] | None, admin_token: str) -> bool:
    """Whether the call carries the operator token (never when none is configured)."""
    given = metadata_value(metadata, ADMIN_TOKEN_METADATA)
    return bool(admin_token) and hmac.compare_digest(given.encode(), admin_token.encode())

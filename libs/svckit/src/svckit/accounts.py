"""Whose generations an internal read may see: the account named in the call's metadata.

The edge reads (and cancels) generations in status on behalf of the API key's account and
says so in `x-pixelmesh-account-id`; status then answers only that account's generations
(another's is NOT_FOUND, exactly like a missing one). A reader of every account's
generations (a worker reading a job's parent, an operator's tools) says so explicitly with
`*`. A read that names no account is refused.
"""

from __future__ import annotations

ACCOUNT_METADATA = "x-pixelmesh-account-id"
ALL_ACCOUNTS = "*"


def account_metadata(account_id: str) -> tuple[tuple[str, str]]:
    """The metadata of a call made on behalf of one account (ALL_ACCOUNTS: of every account)."""
    return ((ACCOUNT_METADATA, account_id),)

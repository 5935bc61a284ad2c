"""Whose generations a status call may read (status.servicer.AccountScope)."""

import pytest

from status.servicer import AccountScope
from svckit.accounts import ALL_ACCOUNTS, account_metadata, operator_metadata
from svckit.errors import ErrorCode, GatewayError

TOKEN = "pm-admin-0123456789abcdef"


class Call:
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def test_an_account_reads_its_own() -> None:
    assert AccountScope(TOKEN).of(Call(account_metadata("acct_a"))) == "acct_a"  # type: ignore[arg-type]


def test_every_account_needs_the_operator_token() -> None:
    assert AccountScope(TOKEN).of(Call(operator_metadata(TOKEN))) == ALL_ACCOUNTS  # type: ignore[arg-type]
    for scope, call in [
        (AccountScope(TOKEN), Call(account_metadata(ALL_ACCOUNTS))),
        (AccountScope(TOKEN), Call(operator_metadata("pm-admin-guessed"))),
        (AccountScope(""), Call(operator_metadata(""))),  # no token configured: nobody
    ]:
        with pytest.raises(GatewayError) as refused:
            scope.of(call)  # type: ignore[arg-type]
        assert refused.value.code is ErrorCode.UNAUTHENTICATED and "operator token" in refused.value.message


def test_a_call_naming_no_account_is_refused() -> None:
    with pytest.raises(GatewayError) as refused:
        AccountScope(TOKEN).of(Call(()))  # type: ignore[arg-type]
    assert refused.value.code is ErrorCode.INVALID_REQUEST and refused.value.param == "x-pixelmesh-account-id"

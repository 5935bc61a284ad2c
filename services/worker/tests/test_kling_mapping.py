"""The kling adapter's pure parts: which environment starts its pool, its error codes."""

from __future__ import annotations

import httpx

from svckit.errors import ErrorCode
from worker.providers import configured
from worker.providers.kling import KlingProvider, refusal_of


def test_the_pool_starts_only_with_both_keys() -> None:
    assert "kling" in configured({"KLING_ACCESS_KEY": "ak", "KLING_SECRET_KEY": "sk"})
    assert "kling" not in configured({"KLING_ACCESS_KEY": "ak"})
    assert "kling" not in configured({"KLING_SECRET_KEY": "sk"})


def _classified(status: int, code: int) -> tuple[ErrorCode, bool] | None:
    found = KlingProvider.classify(httpx.Response(status, json={"code": code, "message": "m", "request_id": "r"}))
    return (found.code, found.retryable) if found else None


def test_codes_are_read_from_the_envelope_not_the_status() -> None:
    assert _classified(429, 1102) == (ErrorCode.PROVIDER_AUTH, True)  # billing, as a 429
    assert _classified(429, 1303) is None  # back-pressure: the generic 429 (retried)
    assert _classified(429, 1304) == (ErrorCode.PROVIDER_AUTH, True)  # IP whitelist
    assert _classified(401, 1004) == (ErrorCode.PROVIDER_AUTH, True)
    assert _classified(400, 1301) == (ErrorCode.CONTENT_POLICY_VIOLATION, False)
    assert _classified(400, 1201) == (ErrorCode.INVALID_REQUEST, False)
    assert _classified(404, 1203) == (ErrorCode.PROVIDER_ERROR, True)
    assert _classified(500, 5000) is None
    assert KlingProvider.classify(httpx.Response(503, text="<html>down</html>")) is None


def test_refused_tasks_are_told_by_their_message() -> None:
    assert refusal_of("Failure to pass the risk control system")
    assert not refusal_of("Internal error, please try again later")

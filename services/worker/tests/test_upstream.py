"""The upstream HTTP kit against a real HTTP server with injected faults."""

from __future__ import annotations

import time

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from svckit.errors import ErrorCode
from tests.emulators.harness import EmulatorServer, EmulatorState, Faults, fake_image, install
from tests.support.ports import free_port
from worker.providers import ProviderError
from worker.providers.upstream import RetryPolicy, Upstream, retry_after_seconds

KEY = "sk-upstream-secret-123"


def echo_app(state: EmulatorState) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/thing")
    async def thing(request: Request):
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return JSONResponse(
                {"error": {"message": f"Incorrect API key provided: {request.headers.get('authorization', '')[7:]}"}},
                401,
            )
        body = await request.json()
        if body.get("bad"):
            return JSONResponse({"error": {"message": "size must be one of 256x256"}}, 400)
        return {"ok": True}

    @app.get("/big")
    async def big():
        return Response(b"x" * 10_000, media_type="application/octet-stream")

    @app.get("/img")
    async def img():
        return Response(fake_image(8, 8, "x"), media_type="image/png")

    return install(app, state, lambda r: True)


@pytest.fixture(scope="module")
def server():
    srv = EmulatorServer("echo", free_port(), create_app=echo_app).start()
    yield srv
    srv.stop()


@pytest.fixture
async def upstream(server):
    server.state.faults = Faults()
    server.state.calls.clear()
    up = Upstream(
        "echo",
        server.url,
        headers={"Authorization": f"Bearer {KEY}"},
        secret=KEY,
        retry=RetryPolicy(budget_seconds=3, base_seconds=0.05),
    )
    yield up
    await up.close()


async def test_5xx_is_retried_until_success(server, upstream) -> None:
    server.state.faults = Faults(fail_first=2, fail_status=503)
    resp = await upstream.request("POST", "/v1/thing", json={})
    assert resp.json() == {"ok": True}
    assert len(server.state.calls) == 3


async def test_retry_after_is_honoured(server, upstream) -> None:
    server.state.faults = Faults(fail_first=1, fail_status=429, retry_after=0.6)
    started = time.monotonic()
    await upstream.request("POST", "/v1/thing", json={})
    assert time.monotonic() - started >= 0.6
    assert len(server.state.calls) == 2


async def test_a_down_upstream_fails_retryably_within_the_budget(server, upstream) -> None:
    server.state.faults = Faults(down=True)
    started = time.monotonic()
    with pytest.raises(ProviderError) as exc:
        await upstream.request("POST", "/v1/thing", json={})
    assert time.monotonic() - started < 3 + 1
    assert exc.value.code is ErrorCode.PROVIDER_UNAVAILABLE and exc.value.retryable
    assert len(server.state.calls) >= 2


async def test_4xx_is_not_retried(server, upstream) -> None:
    with pytest.raises(ProviderError) as exc:
        await upstream.request("POST", "/v1/thing", json={"bad": True})
    assert exc.value.code is ErrorCode.INVALID_REQUEST and not exc.value.retryable
    assert "size must be one of" in exc.value.message
    assert len(server.state.calls) == 1


async def test_a_refused_key_is_the_operators_problem_and_never_echoed(server) -> None:
    up = Upstream(
        "echo",
        server.url,
        headers={"Authorization": "Bearer sk-wrong-key-456"},
        secret="sk-wrong-key-456",
        retry=RetryPolicy(budget_seconds=1, base_seconds=0.05),
    )
    try:
        with pytest.raises(ProviderError) as exc:
            await up.request("POST", "/v1/thing", json={})
    finally:
        await up.close()
    assert exc.value.code is ErrorCode.PROVIDER_AUTH
    assert "sk-wrong-key-456" not in exc.value.message
    assert up.scrub("key sk-wrong-key-456 echoed") == "key [redacted] echoed"


async def test_downloads_are_bounded_and_go_without_credentials(server, upstream) -> None:
    assert (await upstream.download(f"{server.url}/img", 1_000_000)).startswith(b"\x89PNG")
    with pytest.raises(ProviderError) as exc:
        await upstream.download(f"{server.url}/big", 1_000)
    assert "larger than" in exc.value.message


def test_retry_after_parses_seconds_and_dates() -> None:
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "2"})) == 2
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0
    assert retry_after_seconds(httpx.Response(429)) is None


async def test_a_429_the_adapter_reads_as_the_accounts_refusal_is_not_retried(server) -> None:
    """Kling sends its billing refusals as HTTP 429: a classifier's PROVIDER_AUTH stops the retries."""
    server.state.faults = Faults(fail_first=5, fail_status=429)
    server.state.calls.clear()

    def billing(response: httpx.Response) -> ProviderError | None:
        return ProviderError(ErrorCode.PROVIDER_AUTH, "the account is out of credit", retryable=True)

    up = Upstream("echo", server.url, retry=RetryPolicy(budget_seconds=3, base_seconds=0.05), classify=billing)
    try:
        with pytest.raises(ProviderError) as exc:
            await up.request("POST", "/v1/thing", json={})
    finally:
        await up.close()
    assert exc.value.code is ErrorCode.PROVIDER_AUTH and len(server.state.calls) == 1

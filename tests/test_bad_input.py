"""Bad input gets the right 4xx and an OpenAI error object, never a 500."""

from __future__ import annotations

import httpx
import openai
import pytest


def error_of(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err)
    assert err["message"]
    return err


INVALID = [
    ({"model": "no-such-model", "prompt": "x"}, 404, "model", "model_not_found"),
    ({"model": "pixelmesh-sketch", "prompt": "x", "size": "1000x1000"}, 400, "size", "invalid_request"),
    ({"model": "pixelmesh-sketch", "prompt": ""}, 400, "prompt", "invalid_request"),
    ({"model": "pixelmesh-sketch", "prompt": "x", "n": 5}, 400, "n", "invalid_request"),
    ({"model": "pixelmesh-sketch", "prompt": "x", "n": 0}, 400, "n", "invalid_request"),
    ({"model": "pixelmesh-sketch"}, 400, "prompt", "invalid_request"),
    ({"model": "pixelmesh-sketch", "prompt": "x", "quality": "ultra"}, 400, "quality", "invalid_request"),
    ({"model": "pixelmesh-sketch", "prompt": "x", "style": "vivid"}, 400, "style", "invalid_request"),
]
# response_format exists only on the OpenAI route
OPENAI_ONLY = [({"model": "pixelmesh-sketch", "prompt": "x", "response_format": "gif"}, 400, "response_format", "invalid_request")]


@pytest.mark.parametrize(
    ("path", "payload", "status", "param", "code"),
    [("/v1/images/generations", *case) for case in INVALID + OPENAI_ONLY]
    + [("/api/v2/generate", *case) for case in INVALID],
)
async def test_invalid_requests(http: httpx.AsyncClient, path: str, payload: dict, status: int, param: str, code: str) -> None:
    r = await http.post(path, json=payload)
    assert r.status_code == status, r.text
    err = error_of(r)
    assert err["param"] == param
    assert err["code"] == code


async def test_malformed_json(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/images/generations", content=b'{"prompt": "x",', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert error_of(r)["type"] == "invalid_request_error"


async def test_missing_and_wrong_key(edge_url: str) -> None:
    async with httpx.AsyncClient(base_url=edge_url) as c:
        r = await c.post("/v1/images/generations", json={"prompt": "x"})
        assert r.status_code == 401
        assert "API key" in error_of(r)["message"]
        r = await c.post("/v1/images/generations", json={"prompt": "x"}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        assert error_of(r)["code"] == "invalid_api_key"


def test_sdk_raises_its_typed_errors(edge_url: str, api_key: str) -> None:
    client = openai.OpenAI(base_url=f"{edge_url}/v1", api_key=api_key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="pixelmesh-sketch", prompt="x", size="1792x1793")
    assert exc.value.body["param"] == "size"
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="dall-e-9", prompt="x")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{edge_url}/v1", api_key="wrong", max_retries=0).images.generate(prompt="x")


async def test_health_endpoints(edge_url: str) -> None:
    async with httpx.AsyncClient(base_url=edge_url) as c:
        assert (await c.get("/healthz")).status_code == 200
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and all(ready.json()["dependencies"].values())
        metrics = await c.get("/metrics/")
        assert "pixelmesh_http_requests_total" in metrics.text

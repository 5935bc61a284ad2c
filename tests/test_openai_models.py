"""GET /v1/models, GET /v1/models/{id} and POST /api/v2/price, from routing's catalog and pricing's quotes.

A second routing with every OpenAI model enabled (and its own edge) shows the catalog rules
and the surcharges of models the test mesh has no worker for; nothing is queued there.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.images import image_bytes
from tests.support.ports import free_port


def test_models_carry_sizes_capabilities_and_prices(client_sdk) -> None:
    [m] = [m for m in client_sdk.models.list().data if m.id == "pixelmesh-sketch"]
    info = m.model_extra
    assert m.id == "pixelmesh-sketch" and m.owned_by == "pixelmesh"
    assert "2:3" in info["sizes"] and info["max_images"] == 4 and info["max_prompt_chars"] == 4000
    assert info["capabilities"] == {"generations": True, "edits": True, "variations": True, "streaming": True,
                                    "image_input": True, "token_usage": False}
    assert info["edits"]["max_images"] == 16 and info["variations"]["square"]
    prices = info["pricing"]["per_image"]
    assert {"size": "1024x1024", "quality": "hd", "tokens": 1, "usd": 0.01} in prices
    assert client_sdk.models.retrieve("pixelmesh-sketch").id == "pixelmesh-sketch"
    # An alias names its model (seed 004's imagen-3 is Google's migration target).
    assert client_sdk.models.retrieve("imagen-3").id == "gemini-2.5-flash-image"
    with pytest.raises(openai.NotFoundError):
        client_sdk.models.retrieve("no-such-model")


@pytest.fixture(scope="module")
def client_sdk(edge_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{edge_url}/v1", api_key=api_key, max_retries=0, timeout=60)


async def test_price_of_a_local_request(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/v2/price", json={"model": "pixelmesh-sketch", "size": "2:3", "n": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["size"], body["width"], body["height"], body["n"]) == ("2:3", 832, 1248, 3)
    assert (body["tokens"], body["cost_usd"], body["surcharge_per_image_usd"]) == (3, 0.03, 0)
    bad = await http.post("/api/v2/price", json={"model": "pixelmesh-sketch", "size": "3x3"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "size"


@pytest.fixture(scope="module")
def openai_catalog_edge(mesh) -> Iterator[str]:
    """An edge over a routing that serves the OpenAI models too (no openai worker runs)."""
    routing_port, edge_http, edge_grpc = free_port(), free_port(), free_port()
    mesh.start("routing", instance="routing-openai", GRPC_PORT=str(routing_port), METRICS_PORT="0",
               ROUTING_PROVIDERS="local,openai")
    mesh.start("edge", instance="edge-openai", EDGE_HTTP_PORT=str(edge_http), GRPC_PORT=str(edge_grpc), METRICS_PORT="0",
               ROUTING_ADDR=f"127.0.0.1:{routing_port}")
    try:
        mesh.wait_serving(routing_port, "routing-openai")
        mesh.wait_serving(edge_grpc, "edge-openai")
        yield f"http://127.0.0.1:{edge_http}"
    finally:
        mesh.stop("edge-openai")
        mesh.stop("routing-openai")


@pytest.fixture
async def full(openai_catalog_edge: str, api_key: str) -> Iterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=openai_catalog_edge, headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as c:
        yield c


@pytest.mark.parametrize(
    ("request_", "usd", "surcharge"),
    [
        ({"model": "dall-e-3"}, 0.04, 0.0),
        ({"model": "dall-e-3", "size": "1792x1024"}, 0.08, 0.04),
        ({"model": "dall-e-3", "quality": "hd"}, 0.08, 0.04),
        ({"model": "dall-e-3", "quality": "hd", "size": "1024x1792"}, 0.12, 0.08),
        ({"model": "dall-e-2", "size": "256x256"}, 0.016, -0.004),
        ({"model": "gpt-image-1", "quality": "low", "size": "1536x1024"}, 0.016, None),
    ],
)
async def test_price_includes_non_square_and_hd_surcharges(full: httpx.AsyncClient, request_: dict, usd: float,
                                                           surcharge: float | None) -> None:
    r = await full.post("/api/v2/price", json=request_)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["per_image"]["usd"] == pytest.approx(usd)
    if surcharge is not None:
        assert body["surcharge_per_image_usd"] == pytest.approx(surcharge)


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": "dall-e-3", "prompt": "p", "n": 2}, "n"),
        ({"model": "dall-e-2", "prompt": "x" * 1001}, "prompt"),
        ({"model": "dall-e-3", "prompt": "x" * 4001}, "prompt"),
        ({"model": "gpt-image-1", "prompt": "x" * 32001}, "prompt"),
        ({"model": "gpt-image-1", "prompt": "p", "style": "vivid"}, "style"),
        ({"model": "dall-e-3", "prompt": "p", "background": "transparent"}, "background"),
        ({"model": "dall-e-2", "prompt": "p", "output_compression": 50}, "output_compression"),
        ({"model": "dall-e-3", "prompt": "p", "stream": True}, "stream"),
        ({"model": "dall-e-3", "prompt": "p", "size": "1536x1024"}, "size"),
    ],
)
async def test_openai_models_limits(full: httpx.AsyncClient, payload: dict, param: str) -> None:
    r = await full.post("/v1/images/generations", json=payload)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_a_catalog_model_without_an_enabled_provider_is_not_served(full: httpx.AsyncClient) -> None:
    """flux-pro is in the catalog, but this routing enables only local and openai."""
    ids = {m["id"] for m in (await full.get("/v1/models")).json()["data"]}
    assert "dall-e-3" in ids and "flux-pro" not in ids
    r = await full.get("/v1/models/flux-pro")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model", r.text
    r = await full.post("/api/v2/generate", json={"model": "flux-pro", "prompt": "p"})
    assert r.status_code == 404, r.text


async def test_which_models_take_edits_and_variations(full: httpx.AsyncClient) -> None:
    square = {"image": ("x.png", image_bytes(64, 64), "image/png")}
    r = await full.post("/v1/images/edits", files=square, data={"model": "dall-e-3", "prompt": "p"})
    assert r.status_code == 400 and "does not take image edits" in r.json()["error"]["message"]
    r = await full.post("/v1/images/variations", files=square, data={"model": "gpt-image-1"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = await full.post("/v1/images/variations", files={"image": ("x.png", image_bytes(64, 32), "image/png")},
                        data={"model": "dall-e-2"})
    assert r.status_code == 400 and "square" in r.json()["error"]["message"]
    big = {"image": ("x.png", image_bytes(64, 64) + b"\0" * (4 * 1024 * 1024), "image/png")}
    r = await full.post("/v1/images/edits", files=big, data={"model": "dall-e-2", "prompt": "p"})
    assert r.status_code == 400 and "4 MB" in r.json()["error"]["message"]
    models = (await full.get("/v1/models")).json()["data"]
    caps = {m["id"]: m["capabilities"] for m in models}
    assert caps["dall-e-2"]["variations"] and not caps["dall-e-3"]["edits"] and caps["gpt-image-1"]["streaming"]
    assert next(m for m in models if m["id"] == "gpt-image-1")["response_formats"][0] == "b64_json"

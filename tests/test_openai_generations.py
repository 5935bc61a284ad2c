"""POST /v1/images/generations: every field, the response fields of the seeds, the errors.

Drives the real mesh with the official openai SDK (and httpx where the SDK hides a field).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.images import decode
from tests.support.openai_contract import assert_images_response
from tests.support.polling import wait_finished
from tests.support.ports import free_port


@pytest.fixture(scope="module")
def client(edge_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{edge_url}/v1", api_key=api_key, max_retries=0, timeout=120)


def test_every_openai_field_is_honoured(client: openai.OpenAI) -> None:
    resp = client.images.generate(
        model="pixelmesh-sketch", prompt="a lighthouse at dusk", n=2, size="512x512", quality="hd",
        response_format="b64_json", background="transparent", output_format="webp", output_compression=70,
        user="user-1234",
    )
    assert len(resp.data) == 2
    first, second = (decode(base64.b64decode(d.b64_json)) for d in resp.data)
    assert (first.format, first.size, first.mode) == ("WEBP", (512, 512), "RGBA")
    assert first.getextrema()[3][0] == 0, "the transparent background has transparent pixels"
    assert first.tobytes() != second.tobytes()
    assert (resp.output_format, resp.quality, resp.size, resp.background) == ("webp", "hd", "512x512", "transparent")
    assert resp.usage is None, "pixelmesh-sketch is priced per image, not per token"
    extra = resp.model_extra
    assert extra["tokens_spent"] == 2 and extra["cost_usd"] == pytest.approx(0.02)
    assert extra["perf"]["quality"] == "hd" and extra["perf"]["request_id"] == extra["id"]


def test_aggregator_extensions(client: openai.OpenAI) -> None:
    kwargs = dict(model="pixelmesh-sketch", prompt="a landscape at night", size="256x256", response_format="b64_json")
    plain = client.images.generate(**kwargs, extra_body={"seed": 77, "format": "jpeg"})
    assert decode(base64.b64decode(plain.data[0].b64_json)).format == "JPEG"
    assert plain.model_extra["seed"] == 77
    same = client.images.generate(**kwargs, extra_body={"seed": 77, "format": "jpeg"})
    assert same.data[0].b64_json == plain.data[0].b64_json
    steered = client.images.generate(**kwargs, extra_body={"seed": 77, "format": "jpeg", "negative_prompt": "night"})
    assert steered.data[0].b64_json != plain.data[0].b64_json, "negative_prompt changes the picture"


@pytest.mark.parametrize(("size", "pixels"), [("2:3", (832, 1248)), ("16:9", (1344, 768)), ("auto", (1024, 1024))])
def test_aspect_ratio_and_auto_sizes(client: openai.OpenAI, size: str, pixels: tuple[int, int]) -> None:
    resp = client.images.generate(model="pixelmesh-sketch", prompt="dunes", size=size, quality="low")
    assert resp.size == f"{pixels[0]}x{pixels[1]}"
    got = httpx.get(resp.data[0].url, timeout=30)
    assert decode(got.content).size == pixels


def test_default_model_and_response_format(client: openai.OpenAI) -> None:
    resp = client.images.generate(prompt="hills", size="256x256")
    assert resp.data[0].url and resp.data[0].b64_json is None
    assert resp.model_extra["model"] == "pixelmesh-sketch"


def test_safety_identifier_is_the_user(client: openai.OpenAI) -> None:
    resp = client.images.generate(model="pixelmesh-sketch", prompt="sea", size="256x256", safety_identifier="u-9")
    assert resp.data[0].url
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(prompt="sea", size="256x256", user="a", safety_identifier="b")
    assert exc.value.body["param"] == "safety_identifier"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"style": "vivid"}, "style"),
        ({"moderation": "low"}, "moderation"),
        ({"image_url": "https://example.com/x.png"}, "image_url"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"n": 5}, "n"),
        ({"size": "2:5"}, "size"),
        ({"partial_images": 2}, "partial_images"),
        ({"stream": True, "partial_images": 4}, "partial_images"),
        ({"output_compression": 101}, "output_compression"),
        ({"background": "transparent", "output_format": "jpeg"}, "background"),
        ({"format": "png", "output_format": "webp"}, "format"),
        ({"response_format": "png"}, "response_format"),
        ({"seed": -1}, "seed"),
        ({"n": "2"}, "n"),
    ],
)
async def test_catalog_rejections_are_openai_errors(http: httpx.AsyncClient, fields: dict, param: str) -> None:
    r = await http.post("/v1/images/generations", json={"model": "pixelmesh-sketch", "prompt": "x", **fields})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", param, "invalid_request")
    assert err["message"]


async def test_idempotency_key_is_taken_and_checked(http: httpx.AsyncClient) -> None:
    body = {"model": "pixelmesh-sketch", "prompt": "x", "size": "256x256"}
    ok = await http.post("/v1/images/generations", json=body, headers={"Idempotency-Key": "retry-me-1"})
    assert ok.status_code == 200, ok.text
    bad = await http.post("/v1/images/generations", json=body, headers={"Idempotency-Key": "k" * 256})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Idempotency-Key"


@pytest.fixture(scope="module")
def impatient_edge(mesh) -> Iterator[str]:
    """A second edge of the same mesh whose synchronous calls give up after 50 ms."""
    http_port, grpc_port = free_port(), free_port()
    mesh.start("edge", instance="edge-impatient", EDGE_HTTP_PORT=str(http_port), GRPC_PORT=str(grpc_port),
               METRICS_PORT="0", EDGE_SYNC_TIMEOUT_SECONDS="0.05")
    try:
        mesh.wait_serving(grpc_port, "edge-impatient")
        yield f"http://127.0.0.1:{http_port}"
    finally:
        mesh.stop("edge-impatient")


async def test_timeout_is_504_with_the_generation_id_to_poll(impatient_edge: str, api_key: str, http: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=impatient_edge, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as c:
        r = await c.post("/v1/images/generations", json={"prompt": "a slow one", "size": "1024x1024", "quality": "hd"})
    assert r.status_code == 504, r.text
    err = r.json()["error"]
    assert err["code"] == "timeout" and err["generation_id"].startswith("gen_")
    assert r.headers["x-generation-id"] == err["generation_id"]
    assert (await wait_finished(http, err["generation_id"]))["status"] == "completed"


@pytest.mark.parametrize("quality", [None, "auto", "medium"])
async def test_images_response_matches_openais_schema(http: httpx.AsyncClient, quality: str | None) -> None:
    """Field by field as the openai SDK's ImagesResponse: a request's "auto" quality is no quality
    that was used, so it is not echoed; revised_prompt is omitted rather than null."""
    body = {"model": "pixelmesh-sketch", "prompt": "a kite", "size": "256x256", "response_format": "b64_json",
            "user": "end-user-7"}
    if quality:
        body["quality"] = quality
    r = await http.post("/v1/images/generations", json=body)
    assert r.status_code == 200, r.text
    resp = r.json()
    assert_images_response(resp)
    assert resp.get("quality") == (quality if quality == "medium" else None)
    assert resp["safety_identifier"] == "end-user-7"
    assert all(set(item) == {"b64_json"} for item in resp["data"])

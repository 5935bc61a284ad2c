"""The official openai SDK, pointed at the edge with base_url, works unchanged."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.support.catalog import served_model_ids


@pytest.fixture(scope="module")
def client(edge_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{edge_url}/v1", api_key=api_key, max_retries=0, timeout=120)


def test_b64_json_returns_a_real_image_of_the_requested_size(client: openai.OpenAI) -> None:
    resp = client.images.generate(
        model="pixelmesh-sketch", prompt="a lighthouse at dusk", size="1024x1024", response_format="b64_json"
    )
    assert len(resp.data) == 1
    image = Image.open(io.BytesIO(base64.b64decode(resp.data[0].b64_json)))
    assert image.format == "PNG"
    assert image.size == (1024, 1024)
    assert resp.created > 0


def test_url_downloads_the_image(client: openai.OpenAI) -> None:
    resp = client.images.generate(model="pixelmesh-sketch", prompt="a lighthouse at dusk", size="512x512", n=2)
    assert len(resp.data) == 2
    bodies = []
    for item in resp.data:
        assert item.url and "X-Amz-Signature" in item.url and "X-Amz-Expires=3600" in item.url
        got = httpx.get(item.url, timeout=30)
        assert got.status_code == 200
        image = Image.open(io.BytesIO(got.content))
        assert image.size == (512, 512)
        bodies.append(got.content)
    assert bodies[0] != bodies[1], "the n images of one request differ"


def test_output_format_and_seed_are_honoured(client: openai.OpenAI) -> None:
    kwargs = dict(model="pixelmesh-sketch", prompt="a forest at night", size="768x1344", response_format="b64_json")
    a = client.images.generate(**kwargs, extra_body={"seed": 1234, "output_format": "webp"})
    b = client.images.generate(**kwargs, extra_body={"seed": 1234, "output_format": "webp"})
    blob = base64.b64decode(a.data[0].b64_json)
    image = Image.open(io.BytesIO(blob))
    assert (image.format, image.size) == ("WEBP", (768, 1344))
    assert blob == base64.b64decode(b.data[0].b64_json), "same seed, same prompt -> same image"


def test_perf_block_and_cost(edge_url: str, api_key: str) -> None:
    r = httpx.post(
        f"{edge_url}/v1/images/generations",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": "pixelmesh-sketch", "prompt": "a lighthouse at dusk", "size": "256x256", "n": 3},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    perf = body["perf"]
    assert perf["model_used"] == "pixelmesh-sketch"
    assert perf["size"] == "256x256"
    assert perf["request_id"].startswith("gen_")
    assert perf["cost_usd"] == pytest.approx(0.03)
    assert perf["latency_ms"] > 0


def test_models_lists_the_enabled_models(client: openai.OpenAI, mesh) -> None:
    ids = [m.id for m in client.models.list()]
    assert sorted(ids) == sorted(served_model_ids(mesh))
    assert "pixelmesh-sketch" in ids and "gemini-2.5-flash-image" in ids
    assert "imagen-3" not in ids  # an alias: listed as the model it names


def test_request_metrics_name_the_route_and_the_model(client: openai.OpenAI, edge_url: str) -> None:
    client.images.generate(model="pixelmesh-sketch", prompt="count me", size="256x256")
    metrics = httpx.get(f"{edge_url}/metrics/").text
    line = next(
        (l for l in metrics.splitlines() if l.startswith("pixelmesh_http_requests_total{")
         and 'route="/v1/images/generations"' in l and 'model="pixelmesh-sketch"' in l and 'status="200"' in l),
        None,
    )
    assert line is not None and float(line.rsplit(" ", 1)[1]) >= 1, metrics[:2000]

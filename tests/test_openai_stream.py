"""stream=true: OpenAI's SSE events for generations and edits, as the openai SDK parses them."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest

from tests.support import sse
from tests.support.images import decode, image_bytes
from tests.support.openai_contract import assert_stream_event


@pytest.fixture(scope="module")
def client(edge_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{edge_url}/v1", api_key=api_key, max_retries=0, timeout=120)


def test_generation_streams_partials_then_the_image(client: openai.OpenAI) -> None:
    events = list(client.images.generate(
        model="pixelmesh-sketch", prompt="a lighthouse at dusk", size="512x512", stream=True, partial_images=3,
        output_format="webp",
    ))
    assert [e.type for e in events] == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:3]] == [0, 1, 2]
    final = decode(base64.b64decode(events[-1].b64_json))
    assert (final.format, final.size) == ("WEBP", (512, 512))
    assert events[-1].usage.total_tokens == 0 and events[-1].size == "512x512"
    assert all(decode(base64.b64decode(e.b64_json)).size == (512, 512) for e in events[:3])
    assert len({e.b64_json for e in events}) == 4, "each partial is a refinement, then the final image"


def test_stream_without_partials_sends_only_the_completed_images(client: openai.OpenAI) -> None:
    events = list(client.images.generate(model="pixelmesh-sketch", prompt="hills", size="256x256", n=2, stream=True))
    assert [e.type for e in events] == ["image_generation.completed"] * 2


def test_edit_streams_image_edit_events(client: openai.OpenAI) -> None:
    stream = client.images.edit(model="pixelmesh-sketch", image=("x.png", image_bytes(256, 256), "image/png"),
                                prompt="a forest", size="256x256", stream=True, partial_images=1)
    assert [e.type for e in stream] == ["image_edit.partial_image", "image_edit.completed"]


async def test_wire_format(http: httpx.AsyncClient) -> None:
    body = {"model": "pixelmesh-sketch", "prompt": "sea", "size": "256x256", "stream": True, "partial_images": 1}
    async with http.stream("POST", "/v1/images/generations", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = (await r.aread()).decode()
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip() and not b.startswith(":")]
    assert [b.splitlines()[0] for b in blocks] == ["event: image_generation.partial_image", "event: image_generation.completed"]
    assert blocks[0].splitlines()[1].startswith('data: {"type":"image_generation.partial_image","b64_json":"')


async def test_errors_before_the_stream_are_plain_openai_errors(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/images/generations", json={"prompt": "sea", "stream": True, "size": "1x1"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "size"


@pytest.mark.parametrize(("route", "kind"), [("generations", "image_generation"), ("edits", "image_edit")])
async def test_stream_events_match_openais_schema(http: httpx.AsyncClient, route: str, kind: str) -> None:
    fields = {"model": "pixelmesh-sketch", "prompt": "sea", "size": "256x256", "stream": True, "partial_images": 1,
              "user": "end-user-7"}
    if route == "generations":
        request = http.stream("POST", "/v1/images/generations", json=fields)
    else:
        files = {"image": ("x.png", image_bytes(256, 256), "image/png")}
        request = http.stream("POST", "/v1/images/edits", files=files, data={k: str(v) for k, v in fields.items()})
    async with request as r:
        assert r.status_code == 200
        received = [e.json() async for e in sse.events(r)]
    assert [e["type"] for e in received] == [f"{kind}.partial_image", f"{kind}.completed"]
    for event in received:
        assert_stream_event(event)
    assert received[-1]["safety_identifier"] == "end-user-7"

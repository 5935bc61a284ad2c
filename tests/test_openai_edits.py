"""POST /v1/images/edits and /v1/images/variations, multipart exactly as the openai SDK sends them."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

from tests.support.images import decode, image_bytes, mask_bytes
from tests.support.openai_contract import assert_images_response


@pytest.fixture(scope="module")
def client(edge_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{edge_url}/v1", api_key=api_key, max_retries=0, timeout=120)


def pixels(b64: str) -> np.ndarray:
    return np.asarray(decode(base64.b64decode(b64)).convert("RGB"), np.int16)


def test_edit_repaints_the_masked_half(client: openai.OpenAI) -> None:
    resp = client.images.edit(
        model="pixelmesh-sketch", image=("red.png", image_bytes(256, 256), "image/png"),
        mask=("mask.png", mask_bytes(256, 256), "image/png"), prompt="a forest at night", size="256x256",
        response_format="b64_json",
    )
    out = pixels(resp.data[0].b64_json)
    assert out.shape == (256, 256, 3)
    assert np.abs(out[:, :120] - (200, 40, 40)).max() <= 2, "outside the mask the input is kept"
    assert np.abs(out[:, 136:] - (200, 40, 40)).mean() > 30, "inside the mask it is repainted"
    assert resp.model_extra["tokens_spent"] == 1


def test_edit_with_several_images_and_auto_size(client: openai.OpenAI) -> None:
    images = [("a.png", image_bytes(600, 400), "image/png"),
              ("b.webp", image_bytes(600, 400, (10, 10, 240, 255), fmt="WEBP"), "image/webp")]
    resp = client.images.edit(model="pixelmesh-sketch", image=images, prompt="a sea at dawn", n=2, output_format="jpeg")
    assert resp.size == "1536x1024", "auto follows the input's aspect ratio"
    assert len(resp.data) == 2
    first = decode(httpx.get(resp.data[0].url, timeout=30).content)
    assert (first.format, first.size) == ("JPEG", (1536, 1024))


def test_edit_is_deterministic_in_the_seed(client: openai.OpenAI) -> None:
    kwargs = dict(model="pixelmesh-sketch", image=("x.png", image_bytes(256, 256), "image/png"), prompt="dunes",
                  size="256x256", response_format="b64_json", extra_body={"seed": 5})
    assert client.images.edit(**kwargs).data[0].b64_json == client.images.edit(**kwargs).data[0].b64_json


def test_variations(client: openai.OpenAI) -> None:
    source = ("blue.png", image_bytes(256, 256, (20, 40, 220, 255)), "image/png")
    resp = client.images.create_variation(model="pixelmesh-sketch", image=source, n=2, size="256x256",
                                          response_format="b64_json")
    a, b = (pixels(d.b64_json) for d in resp.data)
    assert a.shape == (256, 256, 3) and not np.array_equal(a, b)
    assert a[..., 2].mean() > a[..., 0].mean(), "a variation keeps the input's colours"


@pytest.mark.parametrize(
    ("route", "files", "fields", "param", "words"),
    [
        ("variations", {"image": ("x.png", image_bytes(300, 200), "image/png")}, {}, "image", "square"),
        ("variations", {"image": ("x.jpg", image_bytes(64, 64, fmt="JPEG", mode="RGB"), "image/jpeg")}, {}, "image", "png"),
        ("variations", {"image": ("x.png", image_bytes(64, 64), "image/png")}, {"prompt": "p"}, "prompt", "prompt"),
        ("variations", {"image": ("x.png", b"not an image", "image/png")}, {}, "image", "valid"),
        ("edits", {"image": ("x.png", image_bytes(64, 64), "image/png"),
                   "mask": ("m.png", mask_bytes(32, 32), "image/png")}, {"prompt": "p"}, "mask", "must match"),
        ("edits", {"image": ("x.png", image_bytes(64, 64), "image/png"),
                   "mask": ("m.png", image_bytes(64, 64, mode="RGB"), "image/png")}, {"prompt": "p"}, "mask", "alpha"),
        ("edits", {"image": ("x.png", image_bytes(64, 64), "image/png")}, {}, "prompt", "prompt"),
        ("edits", {}, {"prompt": "p"}, "image", "image"),
        ("edits", {"image": ("x.png", image_bytes(64, 64), "image/png")}, {"prompt": "p", "size": "1792x1024"}, "size", "1792x1024"),
        ("edits", {"image": ("x.png", image_bytes(64, 64), "image/png")}, {"prompt": "p", "n": "9"}, "n", "n"),
        ("edits", {"image": ("x.png", image_bytes(64, 64), "image/png")}, {"prompt": "p", "style": "vivid"}, "style", "style"),
    ],
)
async def test_bad_uploads_are_clear_400s(http: httpx.AsyncClient, route: str, files: dict, fields: dict, param: str,
                                          words: str) -> None:
    r = await http.post(f"/v1/images/{route}", files=files, data={"model": "pixelmesh-sketch", **fields})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and words in err["message"], err


async def test_json_is_refused_on_multipart_routes(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/images/edits", json={"prompt": "p"})
    assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]


async def test_too_many_images(http: httpx.AsyncClient) -> None:
    files = [("image[]", (f"{i}.png", image_bytes(16, 16), "image/png")) for i in range(17)]
    r = await http.post("/v1/images/edits", files=files, data={"prompt": "p"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "image"


@pytest.mark.parametrize("route", ["edits", "variations"])
async def test_edit_and_variation_answers_match_openais_schema(http: httpx.AsyncClient, route: str) -> None:
    fields = {"model": "pixelmesh-sketch", "size": "256x256", "response_format": "b64_json"}
    if route == "edits":
        fields["prompt"] = "a sea at dawn"
    r = await http.post(f"/v1/images/{route}", files={"image": ("x.png", image_bytes(64, 64), "image/png")}, data=fields)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_images_response(body)
    assert "quality" not in body, "the model's default quality (auto) is no quality that was used"


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


async def test_json_edit_repaints_the_masked_half(http: httpx.AsyncClient) -> None:
    """OpenAI's JSON edits body (`images: [{image_url}]`, `mask: {image_url}`) does what multipart does."""
    r = await http.post("/v1/images/edits", json={
        "model": "pixelmesh-sketch", "prompt": "a forest at night", "size": "256x256", "response_format": "b64_json",
        "images": [{"image_url": data_url(image_bytes(256, 256))}],
        "mask": {"image_url": data_url(mask_bytes(256, 256))}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_images_response(body)
    out = pixels(body["data"][0]["b64_json"])
    assert np.abs(out[:, :120] - (200, 40, 40)).max() <= 2, "outside the mask the input is kept"
    assert np.abs(out[:, 136:] - (200, 40, 40)).mean() > 30, "inside the mask it is repainted"


async def test_json_edit_of_several_images_follows_the_first_for_auto_size(http: httpx.AsyncClient) -> None:
    images = [{"image_url": data_url(image_bytes(600, 400))},
              {"image_url": data_url(image_bytes(600, 400, fmt="WEBP"), "image/webp")}]
    r = await http.post("/v1/images/edits", json={"model": "pixelmesh-sketch", "prompt": "a sea", "images": images,
                                                  "n": 2, "output_format": "jpeg"})
    assert r.status_code == 200, r.text
    assert r.json()["size"] == "1536x1024" and len(r.json()["data"]) == 2


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"images": [{"file_id": "file-abc123"}]}, "images[0].file_id", "Files API"),
        ({"images": [{"image_url": "https://example.com/a.png", "file_id": "f"}]}, "images[0]", "exactly one"),
        ({"images": [{}]}, "images[0]", "exactly one"),
        ({"images": []}, "images", "images"),
        ({"images": [{"image_url": "ftp://example.com/a.png"}]}, "images[0].image_url", "http(s)"),
        ({"images": [{"image_url": "data:image/png;base64,not-base64!"}]}, "images[0].image_url", "base64"),
        ({"images": [{"image_url": data_url(b"not an image")}]}, "images[0].image_url", "valid"),
        ({"images": [{"image_url": data_url(image_bytes(64, 64))}], "mask": {"image_url": data_url(mask_bytes(32, 32))}},
         "mask", "must match"),
        ({"images": [{"image_url": data_url(image_bytes(64, 64))}],
          "mask": {"image_url": data_url(image_bytes(64, 64, mode="RGB"))}}, "mask.image_url", "alpha"),
        ({"images": [{"image_url": data_url(image_bytes(64, 64))}] * 17}, "images", "16"),
        ({"images": [{"image_url": data_url(image_bytes(64, 64))}], "size": "1792x1024"}, "size", "1792x1024"),
        ({"images": [{"image_url": data_url(image_bytes(64, 64))}], "n": "2"}, "n", "n"),
        ({"images": [{"image_url": data_url(image_bytes(64, 64))}], "image": "x"}, "image", "Unrecognized"),
    ],
)
async def test_bad_json_edits_are_clear_400s(http: httpx.AsyncClient, body: dict, param: str, words: str) -> None:
    r = await http.post("/v1/images/edits", json={"model": "pixelmesh-sketch", "prompt": "p", **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and words in err["message"], err

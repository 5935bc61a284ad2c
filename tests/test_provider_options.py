"""provider_options through the real mesh: the OpenAI SDK's extra_body and the v2 API's
object reach the upstream (fal's emulator) as sent; routing sends a request only to a
route that takes its options; a bad option is a 400 in each API's own format, charged nothing."""

from __future__ import annotations

import io

import httpx
import openai
import pytest
from PIL import Image

from tests.support.polling import wait_finished
from tests.support.provider_jobs import emulator_fixtures, Control
from tests.support.provider_mesh import start_worker

KEY = "fal-options-key:77"


emulator, control = emulator_fixtures("fal", KEY)


@pytest.fixture(scope="module")
def fal_worker(mesh, emulator):
    instance = start_worker(mesh, "fal", FAL_KEY=KEY, FAL_BASE_URL=emulator.url)
    yield instance
    mesh.stop(instance)


@pytest.fixture(scope="module")
def client(edge_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{edge_url}/v1", api_key=api_key, max_retries=0, timeout=120)


def submitted(control: Control) -> list[dict]:
    return control.get("/_emulator/fal/requests")["requests"]


def test_extra_body_options_reach_the_upstream_and_pick_its_route(client, fal_worker, control) -> None:
    # flux-dev's first route is bfl (no worker here); acceleration is fal's alone, so the
    # generation goes to fal and never waits on bfl.
    result = client.images.generate(
        model="flux-dev", prompt="a lighthouse at dusk", size="1024x768", response_format="b64_json",
        extra_body={"provider_options": {"num_inference_steps": 12, "acceleration": "high"}},
    )
    [req] = submitted(control)
    assert req["app"] == "fal-ai/flux" and req["endpoint"] == "dev"
    assert req["input"]["num_inference_steps"] == 12 and isinstance(req["input"]["num_inference_steps"], int)
    assert req["input"]["acceleration"] == "high"
    assert req["input"]["image_size"] == {"width": 1024, "height": 768}
    assert result.data[0].b64_json


async def test_v2_options_reach_the_upstream(http, fal_worker, control) -> None:
    r = await http.post("/api/v2/generate", json={
        "model": "flux-dev", "prompt": "a bowl of fruit",
        "provider_options": {"guidance_scale": 7.5, "acceleration": "regular"},
    })
    assert r.status_code == 200, r.text
    body = await wait_finished(http, r.json()["id"], timeout=60)
    assert body["status"] == "completed", body
    [req] = submitted(control)
    assert req["input"]["guidance_scale"] == 7.5 and req["input"]["acceleration"] == "regular"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"sampler": "euler"}, "provider_options.sampler"),
        ({"num_inference_steps": 500}, "provider_options.num_inference_steps"),
        ({"steps": 10, "acceleration": "high"}, "provider_options.steps"),
        ({"acceleration": ["high"]}, "provider_options.acceleration"),
    ],
)
def test_bad_options_are_openai_400s_naming_the_option(client, control, options, param) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-dev", prompt="p", extra_body={"provider_options": options})
    error = exc.value.body
    # A list is refused by the edge's schema, whose param names the failed type too.
    assert exc.value.status_code == 400 and error["param"].startswith(param), error
    assert error["type"] == "invalid_request_error"
    assert submitted(control) == []  # refused at admission: nothing reserved, nothing sent


def test_multipart_edit_options_are_checked_by_type(client) -> None:
    # The SDK sends extra_body on a multipart call as provider_options[name] text fields.
    png = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(png, "PNG")
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.edit(
            model="flux-kontext-pro", prompt="make it blue", image=("in.png", png.getvalue(), "image/png"),
            extra_body={"provider_options": {"safety_tolerance": "lots"}},
        )
    assert exc.value.body["param"] == "provider_options.safety_tolerance"
    assert "must be an integer" in exc.value.body["message"]


def test_the_models_list_documents_each_option(client, edge_url, api_key) -> None:
    r = httpx.get(f"{edge_url}/v1/models/flux-dev", headers={"Authorization": f"Bearer {api_key}"})
    options = r.json()["provider_options"]
    assert options["acceleration"] == {
        "type": "string", "minimum": None, "maximum": None, "values": ["none", "regular", "high"],
        "providers": ["fal"], "description": "fal's speed-up",
    }
    assert options["steps"]["minimum"] == 1 and options["steps"]["maximum"] == 50

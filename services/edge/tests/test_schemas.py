import json

import pytest
from google.protobuf.json_format import MessageToDict

from edge.errors import HTTP_ERRORS, openai_error
from edge.inputs import fit_size
from edge.schemas import GenerateBody, ImageForm, OpenAIImageBody, VariationForm, parse_body
from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode, GatewayError


def test_openai_body_translates_to_params() -> None:
    body = parse_body(
        OpenAIImageBody, {"model": "pixelmesh-sketch", "prompt": "p", "n": 2, "size": "512x512", "seed": 3}
    )
    p = body.to_params(default_format="png")
    assert (p.model, p.n, p.size, p.seed, p.output_format) == (
        "pixelmesh-sketch",
        2,
        "512x512",
        3,
        gen.OUTPUT_FORMAT_PNG,
    )
    assert not p.HasField("output_compression")


def test_v2_defaults_to_webp_and_takes_format() -> None:
    assert parse_body(GenerateBody, {"prompt": "p"}).to_params("webp").output_format == gen.OUTPUT_FORMAT_WEBP
    assert (
        parse_body(GenerateBody, {"prompt": "p", "format": "jpeg"}).to_params("webp").output_format
        == gen.OUTPUT_FORMAT_JPEG
    )


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ({}, "prompt"),
        ({"prompt": 3}, "prompt"),
        ({"prompt": "p", "n": "2"}, "n"),
        ({"prompt": "p", "response_format": "jpg"}, "response_format"),
        ({"prompt": "p", "bogus": 1}, "bogus"),
    ],
)
def test_bad_bodies_name_the_field(raw: dict, param: str) -> None:
    with pytest.raises(GatewayError) as exc:
        parse_body(OpenAIImageBody, raw)
    assert exc.value.code is ErrorCode.INVALID_REQUEST and exc.value.param == param


def test_every_error_code_has_an_http_status() -> None:
    assert set(HTTP_ERRORS) == set(ErrorCode)
    resp = openai_error(GatewayError(ErrorCode.RATE_LIMITED, "slow down"))
    assert resp.status_code == 429


def test_rate_limit_metadata_becomes_headers() -> None:
    err = GatewayError(
        ErrorCode.RATE_LIMITED,
        "Rate limit reached for images per minute.",
        retry_after_seconds="12",
        ratelimit_limit_requests="30",
        ratelimit_remaining_requests="0",
        ratelimit_reset_requests="12s",
    )
    resp = openai_error(err)
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "12"
    assert resp.headers["x-ratelimit-limit-requests"] == "30"
    assert resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert resp.headers["x-ratelimit-reset-requests"] == "12s"
    assert json.loads(resp.body)["error"] == {
        "message": "Rate limit reached for images per minute.",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }


def test_every_429_says_when_to_retry() -> None:
    assert openai_error(GatewayError(ErrorCode.RATE_LIMITED, "slow down")).headers["retry-after"] == "1"
    assert "retry-after" not in openai_error(GatewayError(ErrorCode.INVALID_REQUEST, "bad")).headers


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        (ErrorCode.CONTENT_POLICY_VIOLATION, 400, "invalid_request_error"),
        (ErrorCode.UNAUTHENTICATED, 401, "invalid_request_error"),
        (ErrorCode.INSUFFICIENT_BALANCE, 402, "insufficient_quota"),
        (ErrorCode.NOT_FOUND, 404, "invalid_request_error"),
        (ErrorCode.PROVIDER_UNAVAILABLE, 503, "server_error"),
        (ErrorCode.TIMEOUT, 504, "server_error"),
    ],
)
def test_statuses_of_the_issue(code: ErrorCode, status: int, kind: str) -> None:
    resp = openai_error(GatewayError(code, "m", generation_id="gen_1"))
    body = json.loads(resp.body)["error"]
    assert (resp.status_code, body["type"], body["code"], body["generation_id"]) == (status, kind, code.value, "gen_1")
    assert resp.headers["x-generation-id"] == "gen_1"


def test_forms_are_lax_and_translate_to_edit_params() -> None:
    form = parse_body(
        ImageForm, {"prompt": "p", "n": "2", "stream": "true", "partial_images": "1", "input_fidelity": "high"}
    )
    p = form.to_params(gen.GENERATION_KIND_EDIT)
    assert (p.kind, p.n, p.stream, p.partial_images, p.input_fidelity) == (gen.GENERATION_KIND_EDIT, 2, True, 1, "high")
    v = parse_body(VariationForm, {"n": "3", "size": "256x256"}).to_params()
    assert (v.kind, v.n, v.prompt) == (gen.GENERATION_KIND_VARIATION, 3, "")
    with pytest.raises(GatewayError) as exc:
        parse_body(VariationForm, {"prompt": "variations take none"})
    assert exc.value.param == "prompt"


def test_fit_size_follows_the_input_aspect() -> None:
    sizes = ["256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "auto"]
    assert fit_size(sizes, 600, 400) == "1536x1024"
    assert fit_size(sizes, 500, 500) == "512x512"
    assert fit_size(["auto"], 5, 5) is None


def test_provider_options_travel_in_every_body() -> None:
    body = parse_body(OpenAIImageBody, {"prompt": "p", "provider_options": {"steps": 20, "raw": True, "mode": "x"}})
    assert MessageToDict(body.to_params(default_format="png").provider_options) == {
        "steps": 20.0,
        "raw": True,
        "mode": "x",
    }
    # Multipart: the OpenAI SDKs turn extra_body into provider_options[name] fields; a
    # hand-written form may send one JSON field. Values stay text for routing to type.
    form = parse_body(ImageForm, {"prompt": "p", "provider_options[steps]": "20", "provider_options[raw]": "true"})
    assert MessageToDict(form.to_params(gen.GENERATION_KIND_EDIT).provider_options) == {"steps": "20", "raw": "true"}
    form = parse_body(ImageForm, {"prompt": "p", "provider_options": '{"guidance": 3.5}'})
    assert MessageToDict(form.to_params(gen.GENERATION_KIND_EDIT).provider_options) == {"guidance": 3.5}
    assert not parse_body(GenerateBody, {"prompt": "p"}).to_params("webp").HasField("provider_options")


@pytest.mark.parametrize("options", [{"loras": [{"path": "x"}]}, {"nested": {"a": 1}}, {"none": None}, "steps=20", [1]])
def test_provider_options_hold_json_scalars_only(options) -> None:
    with pytest.raises(GatewayError) as exc:
        parse_body(GenerateBody, {"prompt": "p", "provider_options": options})
    assert exc.value.param.startswith("provider_options")


def test_a_form_provider_options_field_must_be_a_json_object() -> None:
    with pytest.raises(GatewayError) as exc:
        parse_body(ImageForm, {"prompt": "p", "provider_options": "[1, 2]"})
    assert exc.value.param == "provider_options"

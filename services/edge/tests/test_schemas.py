import pytest

from edge.errors import HTTP_ERRORS, openai_error
from edge.schemas import GenerateBody, OpenAIImageBody, parse_body
from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode, GatewayError


def test_openai_body_translates_to_params() -> None:
    body = parse_body(OpenAIImageBody, {"model": "pixelmesh-sketch", "prompt": "p", "n": 2, "size": "512x512", "seed": 3})
    p = body.to_params(default_format="png")
    assert (p.model, p.n, p.size, p.seed, p.output_format) == ("pixelmesh-sketch", 2, "512x512", 3, gen.OUTPUT_FORMAT_PNG)
    assert not p.HasField("output_compression")


def test_v2_defaults_to_webp_and_takes_format() -> None:
    assert parse_body(GenerateBody, {"prompt": "p"}).to_params("webp").output_format == gen.OUTPUT_FORMAT_WEBP
    assert parse_body(GenerateBody, {"prompt": "p", "format": "jpeg"}).to_params("webp").output_format == gen.OUTPUT_FORMAT_JPEG


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

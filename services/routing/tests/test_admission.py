import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from routing.admission import admit, validate
from routing.catalog import Catalog
from svckit.errors import ErrorCode, GatewayError


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load({"local", "openai"})


def params(**kw) -> gen.GenerationParams:
    kw.setdefault("prompt", "a lighthouse at dusk")
    return gen.GenerationParams(**kw)


def rejected(catalog: Catalog, model: str, **kw) -> GatewayError:
    with pytest.raises(GatewayError) as exc:
        validate(catalog.get(model), params(model=model, **kw))
    return exc.value


def test_defaults_are_filled(catalog: Catalog) -> None:
    assert validate(catalog.get("pixelmesh-sketch"), params()) == ("1024x1024", "auto", 1)
    assert validate(catalog.get("dall-e-3"), params()) == ("1024x1024", "standard", 1)


@pytest.mark.parametrize(
    ("model", "fields", "param"),
    [
        ("pixelmesh-sketch", {"prompt": "   "}, "prompt"),
        ("dall-e-2", {"prompt": "x" * 1001}, "prompt"),
        ("dall-e-3", {"prompt": "x" * 4001}, "prompt"),
        ("dall-e-3", {"n": 2}, "n"),
        ("pixelmesh-sketch", {"n": 5}, "n"),
        ("pixelmesh-sketch", {"size": "1000x1000"}, "size"),
        ("dall-e-3", {"size": "512x512"}, "size"),
        ("dall-e-3", {"quality": "low"}, "quality"),
        ("dall-e-3", {"style": "cartoon"}, "style"),
        ("dall-e-2", {"style": "vivid"}, "style"),
        ("dall-e-3", {"negative_prompt": "blur"}, "negative_prompt"),
        ("dall-e-3", {"seed": 4}, "seed"),
        ("pixelmesh-sketch", {"background": "transparent", "output_format": gen.OUTPUT_FORMAT_JPEG}, "background"),
        ("pixelmesh-sketch", {"output_compression": 101}, "output_compression"),
        ("dall-e-2", {"output_format": gen.OUTPUT_FORMAT_WEBP}, "output_format"),
    ],
)
def test_rejections_name_the_parameter(catalog: Catalog, model: str, fields: dict, param: str) -> None:
    err = rejected(catalog, model, **fields)
    assert err.code is ErrorCode.INVALID_REQUEST
    assert err.param == param


def test_gpt_image_takes_long_prompts(catalog: Catalog) -> None:
    assert validate(catalog.get("gpt-image-1"), params(prompt="x" * 32000))[2] == 1


def test_unknown_and_disabled_models_are_not_found() -> None:
    local_only = Catalog.load({"local"})
    for name in ("no-such-model", "dall-e-3"):
        with pytest.raises(GatewayError) as exc:
            local_only.get(name)
        assert exc.value.code is ErrorCode.MODEL_NOT_FOUND
        assert exc.value.param == "model"
    assert [m.id for m in local_only.available()] == ["pixelmesh-sketch"]


def test_aliases_resolve(catalog: Catalog) -> None:
    assert Catalog.load({"stability", "midjourney"}).get("stable-diffusion-3").id == "sd-3.5-large"
    assert Catalog.load({"midjourney"}).get("midjourney").id == "midjourney-v6"


def test_admit_builds_the_queued_state(catalog: Catalog) -> None:
    entry = catalog.get("pixelmesh-sketch")
    g = admit(
        entry, "local", params(size="1024x1536", n=2), account_id="a", api_key_id="k", retention_class="days-7",
        cost=gen.Cost(tokens=2), size="1024x1536", quality="auto", n=2,
    )
    assert g.id.startswith("gen_") and len(g.id) == 30
    assert (g.state, g.version, g.attempt) == (gen.GENERATION_STATE_QUEUED, 1, 1)
    assert (g.width, g.height) == (1024, 1536)
    assert 0 <= g.seed < 2**32
    assert g.params.n == 2 and g.output_format == gen.OUTPUT_FORMAT_PNG


def test_seed_is_kept_when_given(catalog: Catalog) -> None:
    entry = catalog.get("pixelmesh-sketch")
    g = admit(
        entry, "local", params(seed=42), account_id="a", api_key_id="k", retention_class="days-7",
        cost=gen.Cost(), size="auto", quality="auto", n=1,
    )
    assert g.seed == 42 and (g.width, g.height) == (1024, 1024)


def test_aspect_ratio_sizes_map_to_pixels() -> None:
    entry = Catalog.load({"midjourney"}).get("midjourney-v6")
    w, h = entry.pixels("2:3")
    assert abs(w / h - 2 / 3) < 0.01


def test_a_request_without_model_gets_the_default(catalog: Catalog) -> None:
    assert catalog.get("").id == "pixelmesh-sketch"

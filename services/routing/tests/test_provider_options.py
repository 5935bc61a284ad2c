"""provider_options: the catalog's allow-list per model, the checks, and the routes that take them."""

import pytest
import yaml
from google.protobuf.json_format import MessageToDict

from pixelmesh.common.v1 import generation_pb2 as gen
from routing.admission import admit, option_routes, validate
from routing.catalog import Catalog, CatalogError, ModelEntry
from svckit.errors import ErrorCode, GatewayError

ALL = {"local", "bfl", "replicate", "fal", "stability", "ideogram"}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(ALL)


def params(model: str, **options) -> gen.GenerationParams:
    p = gen.GenerationParams(model=model, prompt="a lighthouse at dusk")
    p.provider_options.update(options)
    return p


def rejection(entry: ModelEntry, p: gen.GenerationParams) -> GatewayError:
    with pytest.raises(GatewayError) as exc:
        validate(entry, p)
    assert exc.value.code is ErrorCode.INVALID_REQUEST
    return exc.value


@pytest.mark.parametrize(
    ("model", "options", "param", "says"),
    [
        ("flux-dev", {"sampler": "euler"}, "provider_options.sampler", "does not take the provider option 'sampler'"),
        ("pixelmesh-sketch", {"steps": 4}, "provider_options.steps", "(it takes: none)"),
        ("flux-dev", {"steps": 51}, "provider_options.steps", "between 1 and 50"),
        ("flux-dev", {"steps": 2.5}, "provider_options.steps", "must be an integer"),
        ("flux-dev", {"steps": "many"}, "provider_options.steps", "must be an integer"),
        ("flux-dev", {"steps": True}, "provider_options.steps", "must be an integer"),
        ("flux-dev", {"acceleration": "max"}, "provider_options.acceleration", "none, regular, high"),
        ("flux-1.1-pro", {"prompt_upsampling": 1}, "provider_options.prompt_upsampling", "true or false"),
        ("ideogram-v3", {"magic_prompt": "on"}, "provider_options.magic_prompt", "AUTO, ON, OFF"),
        ("flux-dev", {"guidance": None}, "provider_options.guidance", "not a list, object or null"),
        ("flux-dev", {"guidance": [1, 2]}, "provider_options.guidance", "not a list, object or null"),
    ],
)
def test_bad_options_are_refused_naming_the_option(catalog, model, options, param, says) -> None:
    err = rejection(catalog.get(model), params(model, **options))
    assert err.param == param
    assert says in str(err)


def test_good_options_pass_and_are_coerced_to_their_type(catalog) -> None:
    entry = catalog.get("flux-dev")
    # A form's values are text: routing reads them by the option's type.
    p = params("flux-dev", num_inference_steps="12", guidance="3.5")
    size, quality, n = validate(entry, p)
    g = admit(
        entry,
        "fal",
        p,
        account_id="a",
        api_key_id="k",
        retention_class="days-7",
        cost=gen.Cost(),
        size=size,
        quality=quality,
        n=n,
    )
    assert MessageToDict(g.params.provider_options) == {"num_inference_steps": 12.0, "guidance": 3.5}
    p = params("ideogram-v3", magic_prompt="OFF", image_weight=70)
    validate(catalog.get("ideogram-v3"), p)


def test_a_request_with_options_goes_only_to_routes_that_take_them(catalog) -> None:
    entry = catalog.get("flux-dev")
    routes = catalog.routes(entry)
    assert routes == ["bfl", "replicate", "fal"]
    assert option_routes(entry, params("flux-dev"), routes) == routes
    assert option_routes(entry, params("flux-dev", steps=20), routes) == ["bfl"]
    assert option_routes(entry, params("flux-dev", num_inference_steps=20), routes) == ["replicate", "fal"]
    assert option_routes(entry, params("flux-dev", num_inference_steps=20, acceleration="high"), routes) == ["fal"]
    # An option of every route (no `providers`) keeps them all.
    sdxl = catalog.get("stable-diffusion-xl")
    assert option_routes(sdxl, params("stable-diffusion-xl", guidance_scale=7), catalog.routes(sdxl)) == [
        "replicate",
        "fal",
    ]


def test_options_no_enabled_route_takes_together_are_refused(catalog) -> None:
    entry = catalog.get("flux-dev")
    with pytest.raises(GatewayError) as exc:
        option_routes(entry, params("flux-dev", steps=20, acceleration="high"), catalog.routes(entry))
    assert exc.value.param == "provider_options.steps" and "taken only by bfl" in str(exc.value)
    bfl_only = Catalog.load({"bfl"})
    with pytest.raises(GatewayError) as exc:
        option_routes(entry, params("flux-dev", acceleration="high"), bfl_only.routes(bfl_only.get("flux-dev")))
    assert exc.value.param == "provider_options.acceleration"


def test_the_models_list_shows_each_option(catalog) -> None:
    [rule] = [r for r in catalog.get("flux-dev").to_proto().provider_options if r.name == "steps"]
    assert (rule.type, rule.minimum, rule.maximum, list(rule.providers)) == ("integer", 1, 50, ["bfl"])


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"seed": {"type": "integer"}}, "is a request field of its own"),
        ({"steps": {"type": "integer", "providers": ["fal"]}}, "names providers the model has not"),
        ({"steps": {"type": "integer", "values": ["a"]}}, "only a string option lists values"),
        ({"mode": {"type": "string", "minimum": 1}}, "only a number option has a minimum"),
        ({"steps": {"type": "int"}}, "type"),
    ],
)
def test_bad_option_rules_fail_the_catalog_naming_the_model(tmp_path, options, says) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "id": "my-model",
                        "owned_by": "me",
                        "providers": ["local"],
                        "sizes": ["1024x1024"],
                        "default_size": "1024x1024",
                        "provider_options": options,
                    }
                ]
            }
        )
    )
    with pytest.raises(CatalogError) as exc:
        Catalog.load({"local"}, extra=(extra,))
    assert "my-model" in str(exc.value) and says in str(exc.value)

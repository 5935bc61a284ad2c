import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from routing.admission import admit, validate
from routing.catalog import Catalog
from svckit.errors import ErrorCode, GatewayError


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load({"local", "openai", "bfl", "stability", "midjourney"})


def params(**kw) -> gen.GenerationParams:
    kw.setdefault("prompt", "a lighthouse at dusk")
    return gen.GenerationParams(**kw)


def admitted(entry, provider: str, p: gen.GenerationParams, *, size: str, quality: str) -> gen.Generation:  # noqa: ANN001
    """The generation admit() makes of one image for a test account and key."""
    return admit(
        entry,
        provider,
        p,
        account_id="a",
        api_key_id="k",
        retention_class="days-7",
        cost=gen.Cost(),
        size=size,
        quality=quality,
        n=1,
    )


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
        ("dall-e-3", {"background": "transparent"}, "background"),
        ("dall-e-3", {"moderation": "low"}, "moderation"),
        ("gpt-image-1", {"moderation": "strict"}, "moderation"),
        ("dall-e-3", {"output_compression": 50}, "output_compression"),
        ("gpt-image-1", {"style": "vivid"}, "style"),
        ("pixelmesh-sketch", {"image_url": "https://example.com/a.png"}, "image_url"),
        ("dall-e-3", {"response_format": "jpeg"}, "response_format"),
        ("dall-e-3", {"stream": True}, "stream"),
        ("pixelmesh-sketch", {"partial_images": 2}, "partial_images"),
        ("pixelmesh-sketch", {"stream": True, "partial_images": 4}, "partial_images"),
        ("midjourney-v6", {"size": "1024x1024"}, "size"),
        ("flux-pro", {"size": "1000x1000"}, "size"),
        ("flux-pro", {"size": "2048x1024"}, "size"),
        ("stable-diffusion-3", {"size": "512x1536"}, "size"),
        ("pixelmesh-sketch", {"input_images": [gen.InputImage(object_key="k", role="image")]}, "image"),
        # edits / variations
        ("dall-e-3", {"kind": gen.GENERATION_KIND_EDIT}, "model"),
        ("gpt-image-1", {"kind": gen.GENERATION_KIND_VARIATION, "prompt": ""}, "model"),
        ("dall-e-2", {"kind": gen.GENERATION_KIND_EDIT}, "image"),
        ("dall-e-2", {"kind": gen.GENERATION_KIND_VARIATION, "prompt": "no prompt here"}, "prompt"),
        (
            "gpt-image-1",
            {
                "kind": gen.GENERATION_KIND_EDIT,
                "input_fidelity": "ultra",
                "input_images": [gen.InputImage(object_key="k")],
            },
            "input_fidelity",
        ),
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
    assert Catalog.load({"ideogram"}).get("ideogram-2").id == "ideogram-v2"
    assert Catalog.load({"midjourney"}).get("midjourney").id == "midjourney-v6"


# Every model name of seed 004 (the perf API) and the catalog model it runs.
SEED_004_NAMES = {
    "dall-e-3": "dall-e-3",
    "dall-e-2": "dall-e-2",
    "stable-diffusion-3": "sd-3-medium",
    "flux-pro": "flux-pro",
    "flux-dev": "flux-dev",
    "ideogram-2": "ideogram-v2",
    "imagen-3": "gemini-2.5-flash-image",
}


def test_seed_004_names_resolve_to_the_models_that_run() -> None:
    everything = Catalog.load({"openai", "bfl", "stability", "ideogram", "google"})
    assert {name: everything.get(name).id for name in SEED_004_NAMES} == SEED_004_NAMES
    entry = everything.get("imagen-3")
    g = admit(
        entry,
        "google",
        params(model="imagen-3"),
        account_id="acct_1",
        api_key_id="key_1",
        retention_class="days-7",
        cost=gen.Cost(tokens=4),
        size="1024x1024",
        quality="standard",
        n=1,
    )
    assert g.model == g.params.model == "gemini-2.5-flash-image"


def test_admit_builds_the_queued_state(catalog: Catalog) -> None:
    entry = catalog.get("pixelmesh-sketch")
    g = admit(
        entry,
        "local",
        params(size="1024x1536", n=2),
        account_id="a",
        api_key_id="k",
        retention_class="days-7",
        cost=gen.Cost(tokens=2),
        size="1024x1536",
        quality="auto",
        n=2,
    )
    assert g.id.startswith("gen_") and len(g.id) == 30
    assert (g.state, g.version, g.attempt) == (gen.GENERATION_STATE_QUEUED, 1, 1)
    assert (g.width, g.height) == (1024, 1536)
    assert 0 <= g.seed < 2**32
    assert g.params.n == 2 and g.output_format == gen.OUTPUT_FORMAT_PNG


def test_seed_is_kept_when_given(catalog: Catalog) -> None:
    entry = catalog.get("pixelmesh-sketch")
    g = admitted(entry, "local", params(seed=42), size="auto", quality="auto")
    assert g.seed == 42 and (g.width, g.height) == (1024, 1024)


def test_aspect_ratio_sizes_map_to_pixels() -> None:
    entry = Catalog.load({"midjourney"}).get("midjourney-v6")
    w, h = entry.pixels("2:3")
    assert abs(w / h - 2 / 3) < 0.01


def test_a_request_without_model_gets_the_default(catalog: Catalog) -> None:
    assert catalog.get("").id == "pixelmesh-sketch"


def image(key: str = "days-7/uploads/upl_x/0.png", role: str = "image") -> gen.InputImage:
    return gen.InputImage(object_key=key, mime_type="image/png", role=role)


def test_per_model_limits_from_the_seeds(catalog: Catalog) -> None:
    assert validate(catalog.get("dall-e-2"), params(prompt="x" * 1000, n=10))[2] == 10
    assert validate(catalog.get("dall-e-3"), params(quality="hd", style="natural", size="1792x1024")) == (
        "1792x1024",
        "hd",
        1,
    )
    assert validate(catalog.get("dall-e-3"), params(quality="auto"))[1] == "standard"
    assert validate(
        catalog.get("gpt-image-1"),
        params(size="auto", background="transparent", moderation="low", output_compression=80),
    )[:2] == ("auto", "auto")
    assert validate(catalog.get("dall-e-2"), params(output_format=gen.OUTPUT_FORMAT_WEBP))  # the v2 API: format webp


def test_custom_sizes_where_the_seeds_say_custom() -> None:
    bfl = Catalog.load({"bfl"})
    assert validate(bfl.get("flux-pro"), params(size="1440x736"))[0] == "1440x736"
    assert bfl.get("flux-pro").pixels("1440x736") == (1440, 736)


def test_aspect_ratios_for_midjourney_and_the_local_model() -> None:
    mj = Catalog.load({"midjourney", "local"})
    assert validate(mj.get("midjourney-v6"), params(size="2:3"))[0] == "2:3"
    assert validate(mj.get("midjourney-v6"), params())[0] == "1:1"
    assert validate(mj.get("pixelmesh-sketch"), params(size="16:9"))[0] == "16:9"


def test_streaming_models(catalog: Catalog) -> None:
    assert validate(catalog.get("gpt-image-1"), params(stream=True, partial_images=3))[2] == 1
    assert validate(catalog.get("pixelmesh-sketch"), params(stream=True))[2] == 1


def test_edits_and_variations(catalog: Catalog) -> None:
    edit = gen.GENERATION_KIND_EDIT
    assert validate(catalog.get("dall-e-2"), params(kind=edit, input_images=[image(), image(role="mask")])) == (
        "1024x1024",
        "standard",
        1,
    )
    assert validate(catalog.get("gpt-image-1"), params(kind=edit, input_images=[image()] * 16, input_fidelity="high"))
    with pytest.raises(GatewayError) as exc:
        validate(catalog.get("gpt-image-1"), params(kind=edit, input_images=[image()] * 17))
    assert exc.value.param == "image"
    with pytest.raises(GatewayError) as exc:
        validate(catalog.get("dall-e-2"), params(kind=edit, input_images=[image()], size="1536x1024"))
    assert exc.value.param == "size"
    variation = params(kind=gen.GENERATION_KIND_VARIATION, prompt="", input_images=[image()], size="512x512", n=3)
    assert validate(catalog.get("dall-e-2"), variation) == ("512x512", "standard", 3)
    with pytest.raises(GatewayError) as exc:
        validate(
            catalog.get("dall-e-2"),
            params(kind=gen.GENERATION_KIND_VARIATION, prompt="", input_images=[image(), image(role="mask")]),
        )
    assert exc.value.param == "mask"


def test_every_catalog_model_has_a_proto_with_its_rules() -> None:
    everything = Catalog.load(
        {"local", "openai", "bfl", "stability", "ideogram", "google", "midjourney", "replicate", "fal"}
    )
    protos = {m.id: m.to_proto() for m in everything.available()}
    assert protos["dall-e-2"].variations.square and protos["dall-e-2"].edits.mask
    assert protos["gpt-image-1"].edits.max_images == 16 and protos["gpt-image-1"].token_usage
    assert protos["gpt-image-1"].response_formats[0] == "b64_json"
    assert protos["flux-pro"].custom_size.multiple_of == 32
    assert protos["dall-e-3"].default_quality == "standard"
    assert not protos["dall-e-3"].HasField("edits")


def test_gpt_image_2_takes_free_sizes_within_its_rule(catalog: Catalog) -> None:
    model = catalog.get("gpt-image-2")
    for size in ("1280x720", "3840x2160", "2160x3840", "1536x512", "2048x2048"):
        assert validate(model, params(size=size))[0] == size
    assert model.pixels("1280x720") == (1280, 720)
    for size, words in [
        ("1000x1000", "multiples of 16"),
        ("1920x608", "1:3 and 3:1"),
        ("3856x2160", "between 16 and 3840"),
        ("3840x2176", "8,294,400 pixels"),
        ("1280x720x2", "Supported sizes"),
    ]:
        err = rejected(catalog, "gpt-image-2", size=size)
        assert (err.code, err.param) == (ErrorCode.INVALID_REQUEST, "size"), size
        assert words in err.message and repr(size) in err.message, err.message


def test_gpt_image_2_edits_take_free_sizes_and_gpt_image_1_edits_do_not(catalog: Catalog) -> None:
    edit = params(kind=gen.GENERATION_KIND_EDIT, input_images=[image()], size="1536x864", input_fidelity="high")
    assert validate(catalog.get("gpt-image-2"), edit)[0] == "1536x864"
    assert (
        rejected(catalog, "gpt-image-1", kind=gen.GENERATION_KIND_EDIT, input_images=[image()], size="1536x864").param
        == "size"
    )
    assert (
        rejected(catalog, "gpt-image-2", kind=gen.GENERATION_KIND_EDIT, input_images=[image()], size="1000x1000").param
        == "size"
    )


def test_gpt_image_1_mini_and_gpt_image_2_limits(catalog: Catalog) -> None:
    mini = catalog.get("gpt-image-1-mini")
    assert validate(mini, params(n=10, quality="low", prompt="x" * 32000)) == ("1024x1024", "low", 10)
    err = rejected(
        catalog, "gpt-image-1-mini", kind=gen.GENERATION_KIND_EDIT, input_images=[image()], input_fidelity="high"
    )
    assert err.param == "input_fidelity" and "does not take" in err.message
    assert rejected(catalog, "gpt-image-1-mini", size="1280x720").param == "size"
    # gpt-image-2's transparent background is not offered (the sources disagree whether it works)
    assert rejected(catalog, "gpt-image-2", background="transparent").param == "background"
    assert catalog.get("gpt-image-2").to_proto().custom_size.max_pixels == 3840 * 2160


def _kling() -> Catalog:
    return Catalog.load({"kling"})


def test_kling_reference_roles_and_fidelities() -> None:
    catalog = _kling()
    edit = gen.GENERATION_KIND_EDIT
    ref = [gen.InputImage(url="https://example.com/p.png", role="face")]
    assert validate(
        catalog.get("kling-v1-5"),
        params(model="kling-v1-5", kind=edit, input_images=ref, size="3:4", image_fidelity=0.5, human_fidelity=0.2),
    ) == ("3:4", "standard", 1)
    assert (
        rejected(catalog, "kling-v2", kind=edit, input_images=ref).param == "image"
    )  # kling-v2 takes no face reference
    assert rejected(catalog, "kling-v2", image_fidelity=0.5).param == "image_fidelity"
    assert rejected(catalog, "kling-v1", image_fidelity=1.5).param == "image_fidelity"
    assert rejected(catalog, "kling-v1", size="21:9").param == "size"
    assert validate(catalog.get("kling-v2-1"), params(model="kling-v2-1", n=9, size="21:9")) == ("21:9", "standard", 9)
    assert catalog.get("kling-v2").pixels("21:9") == (1344, 576)


def test_try_on_takes_one_person_and_one_garment_and_no_prompt() -> None:
    catalog = _kling()
    edit = gen.GENERATION_KIND_EDIT
    person = gen.InputImage(object_key="days-7/uploads/u1/0.png", role="person")
    garment = gen.InputImage(url="https://example.com/shirt.jpg", role="garment")
    model = "kolors-virtual-try-on-v1"
    assert validate(catalog.get(model), params(model=model, prompt="", kind=edit, input_images=[person, garment])) == (
        "auto",
        "standard",
        1,
    )
    assert rejected(catalog, model, prompt="", kind=edit, input_images=[person]).param == "garment"
    assert rejected(catalog, model, prompt="", kind=edit, input_images=[person, garment, garment]).param == "garment"
    image = gen.InputImage(url="https://example.com/x.png", role="image")
    assert rejected(catalog, model, prompt="", kind=edit, input_images=[person, garment, image]).param == "image"
    assert rejected(catalog, model, prompt="wear it", kind=edit, input_images=[person, garment]).param == "prompt"
    err = rejected(catalog, model, prompt="a shirt")
    assert err.param == "model" and "person" in err.message


def test_ideogram_v3_generate_edit_reframe_and_replace_background() -> None:
    ideogram = Catalog.load({"ideogram"})
    edit = gen.GENERATION_KIND_EDIT
    for model in ("ideogram-v3", "ideogram-v3-turbo", "ideogram-v3-quality", "ideogram-v3-flash"):
        assert validate(ideogram.get(model), params(style="stylized", n=8, size="16:9", negative_prompt="x"))[2] == 8
        masked = params(kind=edit, input_images=[image(), image(role="mask")], size="auto")
        assert validate(ideogram.get(model), masked)[0] == "auto"
    with pytest.raises(GatewayError) as exc:
        validate(ideogram.get("ideogram-v3"), params(style="anime"))
    assert exc.value.param == "style"
    reframe = ideogram.get("ideogram-v3-reframe")
    assert validate(reframe, params(kind=edit, prompt="", input_images=[image()])) == ("1344x768", "standard", 1)
    assert reframe.to_proto().edits.square
    for model, fields, param in [
        ("ideogram-v3-reframe", {"kind": edit, "input_images": [image()]}, "prompt"),
        ("ideogram-v3-replace-background", {"kind": edit, "input_images": [image(), image(role="mask")]}, "mask"),
        ("ideogram-v3-replace-background", {"kind": edit, "prompt": " ", "input_images": [image()]}, "prompt"),
        ("ideogram-v2", {"kind": edit, "input_images": [image()]}, "model"),
    ]:
        with pytest.raises(GatewayError) as exc:
            validate(ideogram.get(model), params(model=model, **fields))
        assert exc.value.param == param, (model, fields)


def test_midjourney_takes_up_to_five_image_prompts_on_a_generation(catalog: Catalog) -> None:
    prompt_images = [gen.InputImage(object_key=f"k{i}", role="image") for i in range(5)]
    assert validate(catalog.get("midjourney-v7"), params(model="midjourney-v7", input_images=prompt_images))
    assert rejected(catalog, "midjourney-v6", input_images=prompt_images * 2).param == "image"
    assert (
        rejected(catalog, "midjourney-v6", input_images=[gen.InputImage(object_key="k", role="mask")]).param == "image"
    )
    # A model without image prompts still sends input images to the edits route.
    err = rejected(catalog, "dall-e-3", input_images=prompt_images[:1])
    assert err.param == "image" and "/v1/images/edits" in err.message


def test_midjourney_v7_options_and_its_omni_reference(catalog: Catalog) -> None:
    entry = catalog.get("midjourney-v7")
    assert validate(entry, params(model="midjourney-v7", image_url="https://img.example/knight.png"))
    assert {"draft", "omni_weight", "exp"} <= set(entry.provider_options)
    assert rejected(catalog, "midjourney-v6", image_url="https://img.example/knight.png").param == "image_url"


def test_an_edit_with_more_images_than_a_route_takes_goes_only_to_the_routes_taking_them() -> None:
    from routing.admission import request_routes

    catalog = Catalog.load({"bfl", "replicate", "fal"})
    entry = catalog.get("flux-kontext-pro")
    edit = gen.GENERATION_KIND_EDIT
    one = params(model="flux-kontext-pro", kind=edit, input_images=[gen.InputImage(object_key="a", role="image")])
    three = params(model="flux-kontext-pro", kind=edit, input_images=[gen.InputImage(object_key="a")] * 3)
    assert request_routes(entry, one, catalog.routes(entry)) == ["bfl", "replicate", "fal"]
    assert request_routes(entry, three, catalog.routes(entry)) == ["bfl"]
    without_bfl = Catalog.load({"replicate", "fal"})
    with pytest.raises(GatewayError) as exc:
        request_routes(entry, three, without_bfl.routes(without_bfl.get("flux-kontext-pro")))
    assert exc.value.param == "image" and "only through bfl" in exc.value.message


def test_the_v2_submit_waits_twice_the_eta_at_most_a_minute_and_midjourney_never(catalog: Catalog) -> None:
    waits = {m: catalog.get(m).default_sync_wait for m in ("pixelmesh-sketch", "dall-e-3", "midjourney-v6")}
    assert waits == {"pixelmesh-sketch": 4, "dall-e-3": 30, "midjourney-v6": 0}
    assert Catalog.load({"openai"}).get("gpt-image-2").default_sync_wait == 60  # 2 x 40 s, cut to 60
    generation = admitted(
        catalog.get("dall-e-3"), "openai", params(model="dall-e-3"), size="1024x1024", quality="standard"
    )
    assert generation.sync_wait_seconds == 30

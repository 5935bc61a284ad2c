"""Admission: a request checked against the catalog becomes a QUEUED generation.

Everything here is pure (no I/O) so that the rules can be tested one by one; the
servicer adds the price quote and the dispatch.
"""

from __future__ import annotations

import secrets

from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from pixelmesh.common.v1 import generation_pb2 as gen
from routing.catalog import ImageInputs, ModelEntry, OptionValue, parse_pixels
from svckit import formats
from svckit.errors import invalid
from svckit.ids import new_generation_id

MAX_SEED = 2**32 - 1


_VALUES = {"input_fidelity": ("high", "low")}
_KINDS = {gen.GENERATION_KIND_EDIT: "edits", gen.GENERATION_KIND_VARIATION: "variations"}


# Which fields are `optional` (HasField tells whether they were sent), read once.
_PRESENCE = {f.name: f.has_presence for f in gen.GenerationParams.DESCRIPTOR.fields}


def _given(params: gen.GenerationParams, name: str) -> bool:
    """Whether the client sent the field: set (`optional` fields, 0 included) or non-empty."""
    if _PRESENCE[name]:
        return params.HasField(name)  # type: ignore[arg-type]  # an `optional` field, as _PRESENCE says
    return bool(getattr(params, name))


def _choice(entry: ModelEntry, name: str, value: str, allowed: list[str] | tuple[str, ...]) -> None:
    """An enumerated parameter: not taken by the model at all, or not one of its values."""
    if not value:
        return
    if not allowed:
        raise invalid(f"{entry.id} does not take the parameter '{name}'.", name)
    if value not in allowed:
        raise invalid(f"Invalid value for '{name}': {value!r}. Supported by {entry.id}: {', '.join(allowed)}.", name)


def _check_size(entry: ModelEntry, size: str, sizes: list[str], custom: bool) -> None:
    if size in sizes:
        return
    listed = ", ".join(sizes)
    wh = parse_pixels(size)
    if custom and entry.custom_size and wh:
        problem = entry.custom_size.problem(*wh)
        if problem is None:
            return
        raise invalid(f"Size {size!r} is not supported by {entry.id}: {problem} (or one of {listed}).", "size")
    raise invalid(f"Size {size!r} is not supported by {entry.id}. Supported sizes: {listed}.", "size")


def _check_named_inputs(entry: ModelEntry, params: gen.GenerationParams, spec: ImageInputs) -> None:
    """One input of each role the model names (Kolors try-on: a person and a garment)."""
    roles = [i.role for i in params.input_images]
    for role in spec.roles:
        if roles.count(role) != 1:
            raise invalid(f"{entry.id} takes exactly one '{role}' image; got {roles.count(role)}.", role)
    for item in params.input_images:
        if item.role not in spec.roles:
            raise invalid(f"{entry.id} takes only {', '.join(spec.roles)} images; got one as {item.role!r}.", "image")
        if not (item.object_key or item.url):
            raise invalid("Every input image needs a stored object key or a URL.", item.role)


def _check_inputs(entry: ModelEntry, params: gen.GenerationParams, spec: ImageInputs, route: str) -> None:
    if spec.roles:
        _check_named_inputs(entry, params, spec)
        return
    images = [i for i in params.input_images if i.role in ("", "image", *spec.references)]
    masks = [i for i in params.input_images if i.role == "mask"]
    if not images:
        raise invalid(f"Missing required parameter: 'image' ({route} need an input image).", "image")
    if len(images) > spec.max_images:
        raise invalid(
            f"{entry.id} takes at most {spec.max_images} input image(s) on {route}; got {len(images)}.", "image"
        )
    if masks and not spec.mask:
        raise invalid(f"{entry.id} does not take a 'mask' on {route}.", "mask")
    if len(masks) > 1:
        raise invalid("Send at most one mask.", "mask")
    roles = ("", "image", "mask", *spec.references)
    for item in params.input_images:
        if not (item.object_key or item.url) or item.role not in roles:
            named = ", ".join(r for r in roles if r)
            raise invalid(f"Every input image needs a stored object key or a URL, and role {named}.", "image")


def _check_image_prompts(entry: ModelEntry, params: gen.GenerationParams) -> None:
    """Input images on a generation from a prompt: the model's image prompts, or a 400."""
    if not entry.image_prompts:
        raise invalid("Input images go to /v1/images/edits or /v1/images/variations.", "image")
    if len(params.input_images) > entry.image_prompts:
        raise invalid(
            f"{entry.id} takes at most {entry.image_prompts} image prompts; got {len(params.input_images)}.", "image"
        )
    for item in params.input_images:
        if not (item.object_key or item.url) or item.role not in ("", "image"):
            raise invalid("Every image prompt needs a stored object key or a URL, and role image.", "image")


def checked_options(entry: ModelEntry, params: gen.GenerationParams) -> dict[str, OptionValue]:
    """The request's provider_options, each allowed by the model and of its type (coerced:
    a form's "28" is the integer 28); a 400 naming `provider_options.<name>` otherwise."""
    if not params.HasField("provider_options"):
        return {}
    checked: dict[str, OptionValue] = {}
    for name, value in sorted(MessageToDict(params.provider_options).items()):
        param = f"provider_options.{name}"
        option = entry.provider_options.get(name)
        if option is None:
            takes = ", ".join(sorted(entry.provider_options)) or "none"
            raise invalid(f"{entry.id} does not take the provider option '{name}' (it takes: {takes}).", param)
        if not isinstance(value, bool | int | float | str):
            raise invalid(f"The provider option '{name}' must be a {option.type}, not a list, object or null.", param)
        try:
            checked[name] = option.coerce(value)
        except ValueError as exc:
            raise invalid(f"The provider option '{name}' {exc} for {entry.id}.", param) from None
    return checked


def request_routes(entry: ModelEntry, params: gen.GenerationParams, routes: list[str]) -> list[str]:
    """The enabled routes whose upstream takes this request: its provider options, and as
    many input images as it carries. A 400 when none does."""
    kept = option_routes(entry, params, routes)
    route = _KINDS.get(params.kind, "")
    spec: ImageInputs | None = getattr(entry, route) if route else None
    if spec is None or not spec.route_max_images:
        return kept
    count = len([i for i in params.input_images if i.role in ("", "image", *spec.references)])

    def takes(provider: str) -> bool:
        return count <= spec.route_max_images.get(provider, spec.max_images)

    taking = [r for r in kept if takes(r)]
    if not taking:
        takers = ", ".join(p for p in entry.providers if takes(p))
        raise invalid(
            f"{entry.id} takes {count} input images only through {takers}, which is not enabled here.", "image"
        )
    return taking


def option_routes(entry: ModelEntry, params: gen.GenerationParams, routes: list[str]) -> list[str]:
    """The routes whose upstream takes every provider option of the request: a fallback
    never sends an upstream a field it would reject. A 400 when no enabled route takes them."""
    # In name order: a Struct keeps no order, and the 400 should name the same option every time.
    names = sorted(MessageToDict(params.provider_options)) if params.HasField("provider_options") else []
    kept = routes
    for name in names:
        takers = entry.provider_options[name].providers
        if takers:
            kept = [r for r in kept if r in takers]
        if not kept:
            raise invalid(
                f"The provider option '{name}' is taken only by {', '.join(takers)}, "
                f"and no route of {entry.id} enabled here takes all of this request's options.",
                f"provider_options.{name}",
            )
    return kept


# Kinds whose inputs say what to make: a blend of images, a description of one, a button
# pressed on an earlier result (which carries its own prompt).
PROMPTLESS_KINDS = frozenset({gen.GENERATION_KIND_BLEND, gen.GENERATION_KIND_DESCRIBE, gen.GENERATION_KIND_ACTION})


def validate(entry: ModelEntry, params: gen.GenerationParams) -> tuple[str, str, int]:
    """Check the request against the model; return (size, quality, n) with defaults filled.

    GENERATION_KIND_EDIT and _VARIATION requests are checked against the model's `edits` /
    `variations` rules (inputs, sizes, prompt); other kinds against its generation rules.
    """
    route = _KINDS.get(params.kind, "")  # "" for a generation from a prompt
    spec: ImageInputs | None = getattr(entry, route) if route else None
    if route and spec is None:
        raise invalid(f"{entry.id} does not take image {route}.", "model")
    if not route and not entry.text_to_image and params.kind not in PROMPTLESS_KINDS and not params.image_url:
        assert entry.edits is not None  # the catalog's rule for such models
        needs = " and ".join(entry.edits.roles) or "image"
        raise invalid(f"{entry.id} makes images only from input images ({needs}), not from a prompt alone.", "model")
    prompt = params.prompt
    if spec is not None and not spec.prompt:
        if prompt:
            raise invalid(f"Image {route} take no prompt.", "prompt")
    elif not prompt.strip() and params.kind not in PROMPTLESS_KINDS:
        raise invalid("The prompt must not be empty.", "prompt")
    if len(prompt) > entry.max_prompt_chars:
        raise invalid(
            f"The prompt is {len(prompt)} characters long; {entry.id} takes at most {entry.max_prompt_chars}.",
            "prompt",
        )
    if params.kind in PROMPTLESS_KINDS and "midjourney" not in entry.providers:
        raise invalid(f"{entry.id} takes no Midjourney blend, describe or button actions.", "model")
    if spec is not None:
        _check_inputs(entry, params, spec, route)
    elif params.input_images and not params.image_url and params.kind not in PROMPTLESS_KINDS:
        _check_image_prompts(entry, params)
    n = params.n or 1
    if not 1 <= n <= entry.max_images:
        raise invalid(f"n must be between 1 and {entry.max_images} for {entry.id}; got {n}.", "n")
    size = params.size or (spec.default_size if spec else entry.default_size)
    _check_size(entry, size, spec.sizes if spec else entry.sizes, custom=spec is None or spec.custom_size)
    quality = params.quality or entry.quality_default
    if quality not in entry.qualities:
        raise invalid(
            f"Quality {quality!r} is not supported by {entry.id}. Supported: {', '.join(entry.qualities)}.", "quality"
        )
    if quality == "auto":  # DALL-E: auto means the model's one quality; priced as such
        quality = entry.quality_default
    for name in ("negative_prompt", "seed", "image_url", "output_compression", "image_fidelity", "human_fidelity"):
        if _given(params, name) and name not in entry.parameters:
            raise invalid(f"{entry.id} does not take the parameter '{name}'.", name)
    for name in ("image_fidelity", "human_fidelity"):
        if _given(params, name) and not 0 <= getattr(params, name) <= 1:
            raise invalid(f"{name} must be between 0 and 1.", name)
    _choice(entry, "style", params.style, entry.styles)
    _choice(entry, "background", params.background, entry.backgrounds)
    _choice(entry, "moderation", params.moderation, entry.moderations)
    _choice(
        entry,
        "input_fidelity",
        params.input_fidelity,
        _VALUES["input_fidelity"] if "input_fidelity" in entry.parameters and spec else (),
    )
    _choice(entry, "response_format", params.response_format, entry.response_formats)
    if params.image_url and not params.image_url.startswith(("https://", "http://", "data:image/")):
        raise invalid("image_url must be an http(s) URL or a data:image/... URL.", "image_url")
    fmt = formats.of(params.output_format).name
    if params.output_format and fmt not in entry.output_formats:
        raise invalid(f"Output format {fmt!r} is not supported by {entry.id}.", "output_format")
    if params.background == "transparent" and fmt == "jpeg":
        raise invalid("A transparent background needs output_format png or webp.", "background")
    if params.HasField("output_compression"):
        if not 0 <= params.output_compression <= 100:
            raise invalid("output_compression must be between 0 and 100.", "output_compression")
    if params.HasField("seed") and not 0 <= params.seed <= MAX_SEED:
        raise invalid(f"seed must be between 0 and {MAX_SEED}.", "seed")
    if params.stream and not entry.max_partial_images:
        raise invalid(f"{entry.id} does not stream; send stream=false.", "stream")
    if params.partial_images and not params.stream:
        raise invalid("partial_images needs stream=true.", "partial_images")
    if not 0 <= params.partial_images <= entry.max_partial_images:
        raise invalid(
            f"partial_images must be between 0 and {entry.max_partial_images} for {entry.id}.", "partial_images"
        )
    checked_options(entry, params)
    return size, quality, n


def admit(
    entry: ModelEntry,
    provider: str,
    params: gen.GenerationParams,
    *,
    account_id: str,
    api_key_id: str,
    retention_class: str,
    cost: gen.Cost,
    size: str,
    quality: str,
    n: int,
) -> gen.Generation:
    """The first state (QUEUED, version 1) of a validated request."""
    width, height = entry.pixels(size)
    now = Timestamp()
    now.GetCurrentTime()
    resolved = gen.GenerationParams()
    resolved.CopyFrom(params)
    resolved.model = entry.id
    resolved.n = n
    resolved.size = size
    resolved.quality = quality
    resolved.response_format = params.response_format or entry.response_formats[0]
    if params.HasField("provider_options"):  # as the upstream takes them
        resolved.provider_options.Clear()
        resolved.provider_options.update(checked_options(entry, params))
    return gen.Generation(
        id=new_generation_id(),
        account_id=account_id,
        api_key_id=api_key_id,
        params=resolved,
        model=entry.id,
        provider=provider,
        state=gen.GENERATION_STATE_QUEUED,
        version=1,
        attempt=1,
        seed=params.seed if params.HasField("seed") else secrets.randbelow(MAX_SEED + 1),
        width=width,
        height=height,
        output_format=formats.of(params.output_format).enum,
        quality=quality,
        cost=cost,
        retention_class=retention_class,
        eta_seconds=entry.eta_seconds,
        sync_wait_seconds=entry.default_sync_wait,
        create_time=now,
        update_time=now,
    )

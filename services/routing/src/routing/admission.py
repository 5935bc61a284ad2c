"""Admission: a request checked against the catalog becomes a QUEUED generation.

Everything here is pure (no I/O) so that the rules can be tested one by one; the
servicer adds the price quote and the dispatch.
"""

from __future__ import annotations

import secrets

from google.protobuf.timestamp_pb2 import Timestamp

from pixelmesh.common.v1 import generation_pb2 as gen
from routing.catalog import ModelEntry
from svckit import formats
from svckit.errors import invalid
from svckit.ids import new_generation_id

MAX_SEED = 2**32 - 1


def _given(params: gen.GenerationParams, name: str) -> bool:
    if name in ("seed", "output_compression"):
        return params.HasField(name)
    return bool(getattr(params, name))


def validate(entry: ModelEntry, params: gen.GenerationParams) -> tuple[str, str, int]:
    """Check the request against the model; return (size, quality, n) with defaults filled."""
    prompt = params.prompt
    if not prompt.strip():
        raise invalid("The prompt must not be empty.", "prompt")
    if len(prompt) > entry.max_prompt_chars:
        raise invalid(
            f"The prompt is {len(prompt)} characters long; {entry.id} takes at most {entry.max_prompt_chars}.",
            "prompt",
        )
    n = params.n or 1
    if not 1 <= n <= entry.max_images:
        raise invalid(f"n must be between 1 and {entry.max_images} for {entry.id}; got {n}.", "n")
    size = params.size or entry.default_size
    if size not in entry.sizes:
        raise invalid(f"Size {size!r} is not supported by {entry.id}. Supported sizes: {', '.join(entry.sizes)}.", "size")
    quality = params.quality or ("auto" if "auto" in entry.qualities else entry.qualities[0])
    if quality not in entry.qualities:
        raise invalid(
            f"Quality {quality!r} is not supported by {entry.id}. Supported: {', '.join(entry.qualities)}.", "quality"
        )
    for name in ("negative_prompt", "seed", "image_url", "moderation", "output_compression"):
        if _given(params, name) and name not in entry.parameters:
            raise invalid(f"{entry.id} does not take the parameter '{name}'.", name)
    if params.style:
        if not entry.styles:
            raise invalid(f"{entry.id} does not take the parameter 'style'.", "style")
        if params.style not in entry.styles:
            raise invalid(f"Style {params.style!r} is not supported. Supported: {', '.join(entry.styles)}.", "style")
    if params.background:
        if not entry.backgrounds:
            raise invalid(f"{entry.id} does not take the parameter 'background'.", "background")
        if params.background not in entry.backgrounds:
            raise invalid(
                f"Background {params.background!r} is not supported. Supported: {', '.join(entry.backgrounds)}.",
                "background",
            )
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
        create_time=now,
        update_time=now,
    )

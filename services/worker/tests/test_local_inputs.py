"""The local provider's edits, variations and partial images (worker.render_inputs, providers.local)."""

from __future__ import annotations

import functools
import io

import numpy as np
import pytest
from PIL import Image

from pixelmesh.common.v1 import generation_pb2 as gen
from services.worker.tests.support import Recorder, Storage
from services.worker.tests.support import generation as generation_of
from worker import render_inputs
from worker.providers.local import LocalProvider
from worker.providers.settings import UpstreamSettings
from worker.render import render_image


def png(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, "PNG")
    return buf.getvalue()


def solid(w: int, h: int, color=(200, 30, 30, 255)) -> np.ndarray:
    return np.tile(np.array(color, np.uint8), (h, w, 1))


def test_edit_repaints_only_the_transparent_part_of_the_mask() -> None:
    base = png(solid(128, 128))
    mask = solid(128, 128, (0, 0, 0, 255))
    mask[:, 64:, 3] = 0  # right half transparent: edit there
    out = render_inputs.edit([base], png(mask), "a forest at night", 5, 128, 128)
    rgb = (out[..., :3] * 255).round()
    assert np.abs(rgb[:, :60] - (200, 30, 30)).max() <= 1, "outside the mask the input stays"
    assert np.abs(rgb[:, 68:] - (200, 30, 30)).mean() > 40, "inside the mask it is repainted"
    again = render_inputs.edit([base], png(mask), "a forest at night", 5, 128, 128)
    assert np.array_equal(out, again)


def test_edit_without_mask_uses_the_image_alpha_or_blends() -> None:
    holed = solid(64, 64)
    holed[:32, :, 3] = 0
    out = render_inputs.edit([png(holed)], None, "sea", 1, 64, 64)
    assert np.abs(out[40:, :, :3] * 255 - (200, 30, 30)).max() <= 1
    blended = render_inputs.edit([png(solid(64, 64))], None, "sea", 1, 64, 64)
    assert 0 < np.abs(blended[..., :3] * 255 - (200, 30, 30)).mean() < 200


def test_variation_is_seeded_by_the_input_and_keeps_its_colours() -> None:
    red, blue = png(solid(96, 96)), png(solid(96, 96, (20, 40, 220, 255)))
    a, b = render_inputs.variation(red, 1, 96, 96), render_inputs.variation(red, 1, 96, 96)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render_inputs.variation(red, 2, 96, 96))
    assert a[..., 0].mean() > a[..., 2].mean()
    c = render_inputs.variation(blue, 1, 96, 96)
    assert c[..., 2].mean() > c[..., 0].mean()


def test_partials_go_from_coarse_to_fine() -> None:
    final = render_inputs.load_rendered(render_image("mountains at dawn", 3, 128, 96).data)
    previews = render_inputs.partials(final, 3)
    errors = [np.abs(p - final).mean() for p in previews]
    assert len(previews) == 3 and errors == sorted(errors, reverse=True) and errors[-1] > 0


def test_negative_prompt_rules_out_what_it_names() -> None:
    plain = render_image("a landscape", 9, 96, 96)
    assert plain.data == render_image("a landscape", 9, 96, 96, negative_prompt="").data
    night = render_image("a landscape at night", 9, 96, 96)
    not_night = render_image("a landscape at night", 9, 96, 96, negative_prompt="night, dark")
    assert night.data != not_night.data


generation = functools.partial(generation_of, width=64, height=64, seed=4, quality="standard", prompt="")


def local(stored: dict[str, bytes] | None = None) -> LocalProvider:
    return LocalProvider.build(UpstreamSettings(), storage=Storage(stored))


async def test_provider_streams_partials_then_final_images() -> None:
    rec = Recorder()
    result = await local().generate(generation(prompt="sea", n=2, stream=True, partial_images=2), rec.progress)
    seen = rec.seen
    images = result.images
    partials = [p for _, p in seen if p is not None]
    assert len(images) == 2 and len(partials) == 2
    assert [pct for pct, _ in seen] == sorted(pct for pct, _ in seen)
    assert Image.open(io.BytesIO(partials[0].data)).size == (64, 64)


async def test_provider_edits_inputs_it_reads_by_object_key() -> None:
    provider = local({"k/0.png": png(solid(64, 64)), "k/1.png": png(solid(64, 64, (0, 0, 0, 0)))})
    progress = Recorder().progress
    inputs = [gen.InputImage(object_key="k/0.png", role="image"), gen.InputImage(object_key="k/1.png", role="mask")]
    job = generation(prompt="forest", kind=gen.GENERATION_KIND_EDIT, input_images=inputs)
    [image] = (await provider.generate(job, progress)).images
    pixels = np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"), np.int16)
    assert np.abs(pixels - (200, 30, 30)).mean() > 40  # fully transparent mask: all repainted
    job = generation(kind=gen.GENERATION_KIND_VARIATION, input_images=inputs[:1], n=2)
    a, b = (await provider.generate(job, progress)).images
    assert a.data != b.data
    with pytest.raises(Exception, match="uploaded images only"):
        await provider.generate(
            generation(prompt="x", kind=gen.GENERATION_KIND_EDIT, input_images=[gen.InputImage(url="http://x/y.png")]),
            progress,
        )

"""Tests of the ``pixelmesh-sketch`` CPU renderer (worker.render)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from worker.render import SUPPORTED_FORMATS, RenderedImage, render_image

PROMPT = "a lighthouse at dusk"


def _decode(result: RenderedImage) -> Image.Image:
    im = Image.open(io.BytesIO(result.data))
    im.load()
    return im


def _pixels(result: RenderedImage) -> np.ndarray:
    return np.asarray(_decode(result).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize(
    "fmt, pil_format, mime",
    [("png", "PNG", "image/png"), ("webp", "WEBP", "image/webp"), ("jpeg", "JPEG", "image/jpeg")],
)
@pytest.mark.parametrize("size", [(64, 64), (256, 160), (96, 300)])
def test_format_and_exact_size(fmt, pil_format, mime, size):
    width, height = size
    result = render_image("a forest at night", 1, width, height, output_format=fmt)
    assert isinstance(result, RenderedImage)
    assert (result.width, result.height, result.output_format, result.mime_type) == (width, height, fmt, mime)
    im = _decode(result)
    assert im.format == pil_format
    assert im.size == (width, height)
    assert im.mode == "RGB"


def test_supported_formats():
    assert SUPPORTED_FORMATS == ("png", "webp", "jpeg")


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_deterministic_bytes(fmt):
    kwargs = dict(output_format=fmt, quality="hd", index=2)
    assert render_image(PROMPT, 7, 200, 150, **kwargs).data == render_image(PROMPT, 7, 200, 150, **kwargs).data


@pytest.mark.parametrize(
    "prompt",
    [
        "",
        "a cat",
        "snowy mountains at dawn",
        "red desert dunes",
        "calm lake at noon",
        "a forest at night",
        "rolling hills",
        "ünïcödé 🌊 sea",
    ],
)
def test_any_prompt_renders_deterministically(prompt):
    a = render_image(prompt, 3, 128, 96)
    assert a.data == render_image(prompt, 3, 128, 96).data
    assert _decode(a).size == (128, 96)
    assert _pixels(a).std() > 5  # a picture, not a flat fill


def test_different_seeds_give_different_pixels():
    a, b = _pixels(render_image(PROMPT, 1, 128, 128)), _pixels(render_image(PROMPT, 2, 128, 128))
    assert np.abs(a - b).mean() > 3


def test_different_prompts_give_different_pixels():
    a, b = _pixels(render_image(PROMPT, 1, 128, 128)), _pixels(render_image("a forest at night", 1, 128, 128))
    assert np.abs(a - b).mean() > 3


def test_index_gives_distinct_but_reproducible_images():
    first, second = render_image(PROMPT, 5, 128, 128, index=0), render_image(PROMPT, 5, 128, 128, index=1)
    assert np.abs(_pixels(first) - _pixels(second)).mean() > 3
    assert render_image(PROMPT, 5, 128, 128, index=1).data == second.data
    assert render_image(PROMPT, 5, 128, 128).data == first.data  # index defaults to 0


@pytest.mark.parametrize("quality", ["standard", "hd", "low", "medium", "high", "auto"])
def test_all_qualities(quality):
    im = _decode(render_image(PROMPT, 1, 96, 64, quality=quality, output_format="jpeg"))
    assert im.size == (96, 64)


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_transparent_background_has_alpha(fmt):
    im = _decode(render_image(PROMPT, 7, 160, 160, output_format=fmt, background="transparent"))
    assert im.mode == "RGBA" and im.size == (160, 160)
    a = np.asarray(im)[..., 3]
    assert a.min() < 255  # transparent sky
    assert a.max() == 255  # opaque land / sea
    assert a[0].max() < 255  # the top row is sky


def test_opaque_backgrounds_have_no_alpha():
    for background in ("auto", "opaque"):
        assert _decode(render_image(PROMPT, 7, 64, 64, background=background)).mode == "RGB"


def test_transparent_jpeg_is_rejected():
    with pytest.raises(ValueError):
        render_image(PROMPT, 7, 64, 64, output_format="jpeg", background="transparent")


def test_output_compression_changes_jpeg_size():
    small = render_image(PROMPT, 7, 256, 256, output_format="jpeg", output_compression=10)
    large = render_image(PROMPT, 7, 256, 256, output_format="jpeg", output_compression=100)
    assert len(small.data) < len(large.data)
    assert _decode(small).size == _decode(large).size == (256, 256)
    webp_small = render_image(PROMPT, 7, 256, 256, output_format="webp", output_compression=5)
    webp_large = render_image(PROMPT, 7, 256, 256, output_format="webp", output_compression=100)
    assert len(webp_small.data) < len(webp_large.data)


def test_output_compression_ignored_for_png():
    assert render_image(PROMPT, 7, 96, 96, output_compression=10).data == render_image(PROMPT, 7, 96, 96).data


@pytest.mark.parametrize(
    "size", [(63, 64), (64, 63), (4097, 64), (64, 4097), (0, 0), (-1, 100), (64.0, 64), (True, 64)]
)
def test_invalid_size_raises(size):
    with pytest.raises(ValueError):
        render_image(PROMPT, 1, *size)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(output_format="gif"),
        dict(output_format="PNG"),
        dict(output_format="jpg"),
        dict(quality="ultra"),
        dict(background="green"),
        dict(output_compression=101),
        dict(output_compression=-1),
        dict(index=-1),
    ],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        render_image(PROMPT, 1, 64, 64, **kwargs)


def test_extreme_sizes_and_aspect():
    for width, height in [(64, 64), (1024, 64), (64, 700)]:
        assert _decode(render_image("mountains", 9, width, height)).size == (width, height)


def test_seed_may_be_large_or_negative():
    assert _decode(render_image(PROMPT, 2**63 + 5, 64, 64)).size == (64, 64)
    assert _decode(render_image(PROMPT, -3, 64, 64)).size == (64, 64)


def test_larger_size_is_the_same_picture():
    small = _pixels(render_image(PROMPT, 4, 128, 128))
    big = render_image(PROMPT, 4, 256, 256, quality="hd")
    big_down = np.asarray(_decode(big).convert("RGB").resize((128, 128), Image.BOX), dtype=np.int16)
    other = _pixels(render_image(PROMPT, 5, 128, 128))
    assert np.abs(small - big_down).mean() < 3
    assert np.abs(small - other).mean() > 5


def test_thread_safe_concurrent_renders():
    from concurrent.futures import ThreadPoolExecutor

    jobs = [
        (p, s, fmt)
        for p in ("a lighthouse at dusk", "a forest at night", "desert")
        for s in (1, 2)
        for fmt in ("png", "webp")
    ]
    expected = [render_image(p, s, 160, 120, output_format=fmt).data for p, s, fmt in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda job: render_image(job[0], job[1], 160, 120, output_format=job[2]).data, jobs))
    assert got == expected

"""What ``pixelmesh-sketch`` does with input images: edits, variations and partial images.

- Edit: the area to repaint is the mask's transparent pixels (or, without a mask, the
  first image's own transparent pixels, as DALL-E 2 reads it); there a fresh render of the
  prompt replaces the input, elsewhere the input stays. An opaque input without a mask is
  repainted as a whole, half input, half render. Further images are blended into the first
  as references. The result is resized to the requested size.
- Variation: a re-render seeded from the input's bytes, steered by its brightness and
  colour, with the input's colour statistics transferred onto it and a trace of its layout.
- Partial images: the final picture at 1/2^k resolution, scaled back up (coarse to fine).

Deterministic like the renderer: equal inputs and arguments give equal bytes.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from worker.render import render_image

_HUE_WORDS = (
    (0, "red"),
    (30, "orange"),
    (50, "gold"),
    (120, "green"),
    (180, "teal"),
    (225, "blue"),
    (275, "purple"),
    (320, "pink"),
)


def decode(data: bytes, width: int, height: int) -> np.ndarray:
    """An uploaded image as float RGBA (h, w, 4) in 0..1 at the target size."""
    image = Image.open(io.BytesIO(data)).convert("RGBA")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(image, np.float32) / 255.0


def encode(rgba: np.ndarray, output_format: str, output_compression: int | None, keep_alpha: bool) -> bytes:
    pixels = (np.clip(rgba, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    image = Image.fromarray(pixels if keep_alpha else np.ascontiguousarray(pixels[..., :3]))
    buf = io.BytesIO()
    q = 85 if output_compression is None else max(1, output_compression)
    if output_format == "png":
        image.save(buf, "PNG", compress_level=4)
    elif output_format == "jpeg":
        image.convert("RGB").save(buf, "JPEG", quality=q)
    else:
        image.save(buf, "WEBP", quality=q, method=4)
    return buf.getvalue()


def _rendered(prompt: str, seed: int, width: int, height: int, **kw) -> np.ndarray:
    out = render_image(prompt, seed, width, height, output_format="png", **kw)
    return np.asarray(Image.open(io.BytesIO(out.data)).convert("RGBA"), np.float32) / 255.0


def edit(
    images: list[bytes],
    mask: bytes | None,
    prompt: str,
    seed: int,
    width: int,
    height: int,
    *,
    index: int = 0,
    quality: str = "standard",
    negative_prompt: str = "",
    background: str = "auto",
) -> np.ndarray:
    """The edited picture (float RGBA) of ``images[0]`` (+ references) under ``mask``."""
    base = decode(images[0], width, height)
    for ref in images[1:]:  # references: a quarter of each, in order
        base = base * 0.75 + decode(ref, width, height) * 0.25
    if mask is not None:
        area = 1.0 - decode(mask, width, height)[..., 3]
    elif (base[..., 3] < 0.999).any():
        area = 1.0 - base[..., 3]
    else:
        area = np.full((height, width), 0.5, np.float32)
    fresh = _rendered(
        prompt,
        seed,
        width,
        height,
        index=index,
        quality=quality,
        negative_prompt=negative_prompt,
        background=background,
    )
    out = base * (1.0 - area[..., None]) + fresh * area[..., None]
    if background != "transparent":
        out[..., 3] = 1.0
    return out


def _steering_words(rgba: np.ndarray) -> str:
    """Mood and colour words read from the input: dark -> night, warm and mid -> dusk, ..."""
    rgb = rgba[..., :3].reshape(-1, 3)
    mean = rgb.mean(axis=0)
    lum = float(mean @ np.array((0.299, 0.587, 0.114), np.float32))
    mood = (
        "night" if lum < 0.22 else "dusk" if mean[0] > mean[2] * 1.15 and lum < 0.55 else "day" if lum > 0.6 else "dawn"
    )
    hsv = np.asarray(
        Image.fromarray((rgb.reshape(rgba.shape[0], -1, 3) * 255).astype(np.uint8)).convert("HSV"), np.float32
    )
    sat = hsv[..., 1] / 255.0
    if float(sat.mean()) < 0.2:
        return mood
    hue = float(np.average(hsv[..., 0], weights=sat + 1e-6)) * 360.0 / 255.0
    colour = min(_HUE_WORDS, key=lambda hw: min(abs(hue - hw[0]), 360 - abs(hue - hw[0])))[1]
    return f"{mood} {colour}"


def variation(image: bytes, seed: int, width: int, height: int, *, index: int = 0) -> np.ndarray:
    """A variation (float RGBA) of ``image``: a re-render seeded from its bytes and the seed."""
    src = decode(image, width, height)
    derived = int.from_bytes(hashlib.sha256(image + b"\x00%d" % seed).digest()[:4], "big")
    fresh = _rendered(_steering_words(src), derived, width, height, index=index)
    rgb, ref = fresh[..., :3], src[..., :3]
    mu, sd = rgb.mean(axis=(0, 1)), rgb.std(axis=(0, 1)) + 1e-4
    spread = np.maximum(ref.std(axis=(0, 1)), 0.08)  # a flat input still gets a picture
    moved = (rgb - mu) / sd * spread + ref.mean(axis=(0, 1))  # colour statistics of the input
    out = np.empty_like(fresh)
    out[..., :3] = np.clip(moved, 0, 1) * 0.8 + ref * 0.2
    out[..., 3] = 1.0
    return out


def partials(rgba: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` coarse-to-fine previews of a picture: 1/2^count .. 1/2 of its resolution."""
    height, width = rgba.shape[:2]
    image = Image.fromarray((np.clip(rgba, 0, 1) * 255 + 0.5).astype(np.uint8))
    out = []
    for k in range(count, 0, -1):
        small = image.resize((max(8, width >> k), max(8, height >> k)), Image.Resampling.BOX)
        out.append(np.asarray(small.resize((width, height), Image.Resampling.BILINEAR), np.float32) / 255.0)
    return out


def load_rendered(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"), np.float32) / 255.0

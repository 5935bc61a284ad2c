"""Small real images for upload tests."""

from __future__ import annotations

import io

from PIL import Image


def image_bytes(width: int, height: int, color=(200, 40, 40, 255), fmt: str = "PNG", mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), color if mode == "RGBA" else color[:3]).save(buf, fmt)
    return buf.getvalue()


def mask_bytes(width: int, height: int, transparent_right_half: bool = True) -> bytes:
    """Opaque black with the right half fully transparent (the area to edit)."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    if transparent_right_half:
        image.paste((0, 0, 0, 0), (width // 2, 0, width, height))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image

"""Input images (edits, variations, Midjourney's base64 inputs), checked before anything is stored.

Two steps, both pure: `read_image` when the request is parsed (the bytes are an image of a
format the gateway takes, within the pixel cap; a mask has an alpha channel), and
`check_rule` once routing named the model (its formats, bytes, square, the mask's size).
The generations core stores the inputs only after both passed and routing's dry run did.
Base64 inputs (data URLs) are decoded here (`decode_base64_image`); an http(s) URL a client
names (`ImageLink`) is not fetched by the edge: the worker reads it (public hosts only).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.routing.v1 import routing_service_pb2 as routing_pb
from svckit import formats
from svckit.errors import invalid

MAX_PIXELS = 40_000_000
PIL_FORMATS = {"PNG": "png", "WEBP": "webp", "JPEG": "jpeg", "MPO": "jpeg"}
DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,(?P<data>.*)$", re.S
)
MAX_LINK_CHARS = 2048


@dataclass(frozen=True)
class Upload:
    """An input image of a request, read and ready to check against the model and store."""

    data: bytes
    format: gen.OutputFormat.ValueType
    mime_type: str
    width: int
    height: int
    role: str  # image | mask
    param: str  # the request field that carried it
    what: str  # how errors name it ("image file 'a.png'", "base64Array[1]")


@dataclass(frozen=True)
class ImageLink:
    """An input image the client named by its http(s) URL, passed on as it is."""

    url: str
    role: str  # image | mask
    param: str

    def ref(self) -> gen.InputImage:
        return gen.InputImage(url=self.url, role=self.role)


# What a request's inputs are: checked bytes to store, or URLs the worker reads.
Input = Upload | ImageLink


def _open(data: bytes, what: str, param: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.verify()  # reads the whole file: truncated or corrupt data fails here, not in a worker
        return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise invalid(f"The {what} is not a valid PNG, WebP or JPEG image.", param) from None


def read_image(data: bytes, *, what: str, param: str, role: str = "image", max_bytes: int = 0) -> Upload:
    """The bytes as an Upload: a PNG, WebP or JPEG image within the pixel cap (and under
    `max_bytes` when given); a mask must have an alpha channel."""
    if not data:
        raise invalid(f"The {what} is empty.", param)
    if max_bytes and len(data) > max_bytes:
        raise invalid(f"The {what} is larger than {max_bytes // (1024 * 1024)} MB.", param)
    image = _open(data, what, param)
    name = PIL_FORMATS.get(image.format or "")
    if name is None:
        raise invalid(f"The {what} must be a png, webp or jpeg image; got {image.format or 'unknown'}.", param)
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise invalid(f"The {what} has {width}x{height} pixels; at most {MAX_PIXELS} are taken.", param)
    if role == "mask" and not (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info):
        raise invalid(
            "The mask must be a PNG with an alpha channel: fully transparent pixels mark the area to edit.", param
        )
    fmt = formats.BY_NAME[name]
    return Upload(data, fmt.enum, fmt.mime_type, width, height, role, param, what)


def decode_base64_image(
    value: str, *, param: str, what: str = "", role: str = "image", max_bytes: int = 0, bare: bool = True
) -> Upload:
    """A data URL (`data:<mime>;base64,<data>`), or with `bare` plain base64, of a png, webp
    or jpeg image, decoded and read like an upload."""
    what = what or param
    text = value.strip()
    m = DATA_URL.match(text)
    if m is not None:
        if not m["b64"]:
            raise invalid(f"{param} must be base64 (data:<mime>;base64,<data>).", param)
        text = m["data"]
    elif not bare:
        raise invalid(f"{param} must be a data:image/...;base64 URL or an http(s) URL.", param)
    try:
        data = base64.b64decode(re.sub(r"\s+", "", text), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{param} is not valid base64.", param) from None
    return read_image(data, what=what, param=param, role=role, max_bytes=max_bytes)


def read_image_url(value: str, *, param: str, role: str = "image", max_bytes: int = 0) -> Input:
    """An `image_url` of a JSON body: a base64 data URL decoded and read like an upload, or an
    absolute http(s) URL passed on to the worker (which fetches public hosts only)."""
    if value.startswith("data:"):
        return decode_base64_image(
            value, param=param, what=f"{role} {param}", role=role, max_bytes=max_bytes, bare=False
        )
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or len(value) > MAX_LINK_CHARS or any(c.isspace() for c in value):
        raise invalid(
            f"{param} must be an http(s) URL (at most {MAX_LINK_CHARS} characters) or a data:image/...;base64 URL.",
            param,
        )
    return ImageLink(value, role, param)


def check_rule(upload: Upload, rule: routing_pb.ImageInputRule, model: str) -> None:
    """The model's rule for this route (edits or variations): formats, bytes, square."""
    if len(upload.data) > rule.max_bytes:
        raise invalid(
            f"The {upload.what} is {len(upload.data)} bytes; {model} takes files under "
            f"{rule.max_bytes // (1024 * 1024)} MB.",
            upload.param,
        )
    allowed = ["png"] if upload.role == "mask" else list(rule.formats)
    name = formats.of(upload.format).name
    if name not in allowed:
        raise invalid(f"The {upload.what} must be {' or '.join(allowed)} for {model}; got {name}.", upload.param)
    if rule.square and upload.width != upload.height:
        raise invalid(
            f"The {upload.what} must be square for {model}; it is {upload.width}x{upload.height}.", upload.param
        )


def check_mask(mask: Upload, first: Upload) -> None:
    if (mask.width, mask.height) != (first.width, first.height):
        raise invalid(
            f"The mask is {mask.width}x{mask.height} but the image is {first.width}x{first.height}; they must match.",
            "mask",
        )


def fit_size(sizes: list[str], width: int, height: int) -> str | None:
    """For size=auto: the listed pixel size nearest the input's aspect ratio, then its area."""
    best: tuple[float, float, str] | None = None
    for size in sizes:
        w, _, h = size.partition("x")
        if not (w.isdigit() and h.isdigit()):
            continue
        key = (abs(math.log(int(w) / int(h)) - math.log(width / height)), abs(int(w) * int(h) - width * height), size)
        best = key if best is None or key < best else best
    return best[2] if best else None

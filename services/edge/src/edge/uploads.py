"""Multipart requests of /v1/images/edits and /v1/images/variations, as the openai SDKs send them.

The files are checked here against the model's catalog rule (formats, bytes, square, mask)
before anything is stored, so a bad upload is a clear 400 and never a queued job.
"""

from __future__ import annotations

import io
import math

from fastapi import Request
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from edge.mesh import Upload
from pixelmesh.routing.v1 import routing_service_pb2 as routing_pb
from svckit import formats
from svckit.errors import invalid

IMAGE_FIELDS = ("image", "image[]")
MAX_FILES = 17  # up to 16 images and a mask
MAX_PIXELS = 40_000_000
PIL_FORMATS = {"PNG": "png", "WEBP": "webp", "JPEG": "jpeg", "MPO": "jpeg"}


async def read_form(request: Request) -> tuple[dict[str, str], list[UploadFile], UploadFile | None]:
    """(text fields, image files in order, mask file): `image`, repeated `image`/`image[]`, `mask`."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid("This endpoint takes multipart/form-data with the image file(s) and the fields.", "image")
    try:
        form = await request.form(max_files=MAX_FILES, max_fields=64)
    except HTTPException as exc:  # Starlette's parse errors (too many files, bad framing)
        raise invalid(f"We could not parse the multipart body: {exc.detail}", "image") from None
    fields: dict[str, str] = {}
    images: list[UploadFile] = []
    mask: UploadFile | None = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key in IMAGE_FIELDS:
                images.append(value)
            elif key == "mask" and mask is None:
                mask = value
            else:
                raise invalid(f"Unexpected file in field '{key}'; files go in 'image' (or 'image[]') and 'mask'.", key)
        elif key in (*IMAGE_FIELDS, "mask"):
            raise invalid(f"'{key}' must be a file upload.", key.removesuffix("[]"))
        elif key in fields:
            raise invalid(f"The field '{key}' was sent twice.", key)
        else:
            fields[key] = value
    return fields, images, mask


def _open(data: bytes, what: str, param: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.verify()  # reads the whole file: truncated or corrupt data fails here, not in a worker
        return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise invalid(f"The {what} is not a valid PNG, WebP or JPEG image.", param) from None


async def check_file(file: UploadFile, rule: routing_pb.ImageInputRule, *, role: str, model: str) -> Upload:
    """Read and check one uploaded file against the model's rule for this route."""
    param = role
    what = f"{role} file '{file.filename or role}'"
    data = await file.read()
    if not data:
        raise invalid(f"The {what} is empty.", param)
    if len(data) > rule.max_bytes:
        raise invalid(
            f"The {what} is {len(data)} bytes; {model} takes files under {rule.max_bytes // (1024 * 1024)} MB.", param
        )
    image = _open(data, what, param)
    name = PIL_FORMATS.get(image.format or "")
    allowed = ["png"] if role == "mask" else list(rule.formats)
    if name not in allowed:
        raise invalid(f"The {what} must be {' or '.join(allowed)} for {model}; got {image.format or 'unknown'}.", param)
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise invalid(f"The {what} has {width}x{height} pixels; at most {MAX_PIXELS} are taken.", param)
    if rule.square and width != height:
        raise invalid(f"The {what} must be square for {model}; it is {width}x{height}.", param)
    if role == "mask" and not (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info):
        raise invalid(
            "The mask must be a PNG with an alpha channel: fully transparent pixels mark the area to edit.", "mask"
        )
    fmt = formats.BY_NAME[name]
    return Upload(data=data, format=fmt.enum, mime_type=fmt.mime_type, width=width, height=height, role=role)


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

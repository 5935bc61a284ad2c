"""Multipart requests of /v1/images/edits and /v1/images/variations, as the openai SDKs send them.

The files are read into checked `edge.inputs.Upload`s here; the generations core checks
them against the model's catalog rule before anything is stored, so a bad upload is a
clear 400 and never a queued job.
"""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from edge.inputs import Upload, read_image
from svckit.errors import invalid

IMAGE_FIELDS = ("image", "image[]")
MAX_FILES = 17  # up to 16 images and a mask


async def read_form(request: Request) -> tuple[dict[str, str], list[Upload]]:
    """(text fields, the images in order then the mask): `image`, repeated `image`/`image[]`, `mask`."""
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
    uploads = [await _read(f, "image") for f in images]
    if mask is not None:
        uploads.append(await _read(mask, "mask"))
    return fields, uploads


async def _read(file: UploadFile, role: str) -> Upload:
    return read_image(await file.read(), what=f"{role} file '{file.filename or role}'", param=role, role=role)

"""Emulator of Stability AI's REST v2beta Stable Image API (docs/provider-contracts.md §3).

- `POST /v2beta/stable-image/generate/{ultra,core,sd3}`, `authorization: Bearer <key>`,
  multipart/form-data only (10 MiB at most, else 413), `accept: image/*` (default) or
  `application/json`. Fields are checked per endpoint as the spec states them (required
  prompt, enums, ranges, `strength` with `image`, sd3's png/jpeg-only output and turbo's
  missing negative prompt, no aspect_ratio in image-to-image); errors are
  `{"id", "name", "errors": [...]}`.
- REFUSED_WORD in the prompt: 403 `content_moderation`. OUTPUT_FLAGGED: a 200 whose image
  is blurred, with `finish-reason: CONTENT_FILTERED`.
- One image per request, sized by aspect ratio (about 1 MP) or like the input image;
  image/* answers carry `finish-reason`, `seed` and `x-request-id` headers, JSON answers
  `{"image", "finish_reason", "seed"}`.
"""

from __future__ import annotations

import base64
import io
import re
import secrets

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, ImageFilter, UnidentifiedImageError
from starlette.datastructures import UploadFile

from tests.emulators.harness import REFUSED_WORD, EmulatorState, fake_image, install

OUTPUT_FLAGGED = "flagged-output"
MAX_BODY = 10 * 1024 * 1024
RATIOS = {"21:9": (1536, 640), "16:9": (1344, 768), "3:2": (1216, 832), "5:4": (1152, 896), "1:1": (1024, 1024),
          "4:5": (896, 1152), "2:3": (832, 1216), "9:16": (768, 1344), "9:21": (640, 1536)}
SD3_MODELS = ("sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3-large", "sd3-large-turbo", "sd3-medium")
STYLE_PRESETS = ("3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance", "fantasy-art",
                 "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami", "photographic",
                 "pixel-art", "tile-texture")
FIELDS = {
    "ultra": {"prompt", "negative_prompt", "aspect_ratio", "seed", "output_format", "image", "strength"},
    "core": {"prompt", "negative_prompt", "aspect_ratio", "seed", "style_preset", "output_format"},
    "sd3": {"prompt", "mode", "image", "strength", "aspect_ratio", "model", "seed", "output_format", "negative_prompt",
            "cfg_scale"},
}
FORMATS = {"ultra": ("jpeg", "png", "webp"), "core": ("png", "jpeg", "webp"), "sd3": ("png", "jpeg")}
PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


class Failure(Exception):
    def __init__(self, status: int, name: str, *errors: str) -> None:
        super().__init__(name)
        self.status = status
        self.body = {"id": secrets.token_hex(16), "name": name, "errors": list(errors)}


def bad(*errors: str) -> Failure:
    return Failure(400, "bad_request", *errors)


def number(fields: dict, name: str, lo: float, hi: float, integer: bool = False) -> float | None:
    if name not in fields:
        return None
    pattern = r"\d+" if integer else r"\d+(\.\d+)?"
    value = fields[name]
    if not re.fullmatch(pattern, value) or not lo <= float(value) <= hi:
        raise bad(f"{name}: must be a number between {lo:g} and {hi:g}")
    return float(value)


async def read_image(part: object) -> Image.Image:
    if not isinstance(part, UploadFile):
        raise bad("image: must be a file")
    try:
        image = Image.open(io.BytesIO(await part.read()))
        image.load()
    except (UnidentifiedImageError, OSError):
        raise bad("image: could not be decoded") from None
    if image.format not in ("PNG", "JPEG", "WEBP"):
        raise bad("image: must be jpeg, png or webp")
    if min(image.size) < 64 or max(image.size) > 16384 or image.width * image.height < 4096:
        raise bad("image: each side must be 64 to 16384 pixels, at least 4096 pixels in total")
    return image


def validate(endpoint: str, fields: dict, image: Image.Image | None) -> dict:
    allowed = FIELDS[endpoint]
    for key in (*fields, *(["image"] if image is not None else [])):
        if key not in allowed:
            raise bad(f"{key}: is not a field of this endpoint")
    prompt = fields.get("prompt", "")
    if not 1 <= len(prompt) <= 10000:
        raise bad("prompt: is required and must be 1 to 10000 characters")
    if len(fields.get("negative_prompt", "")) > 10000:
        raise bad("negative_prompt: must be at most 10000 characters")
    if fields.get("aspect_ratio", "1:1") not in RATIOS:
        raise bad(f"aspect_ratio: must be one of {', '.join(RATIOS)}")
    number(fields, "seed", 0, 4294967294, integer=True)
    output_format = fields.get("output_format", "png")
    if output_format not in FORMATS[endpoint]:
        raise bad(f"output_format: must be one of {', '.join(FORMATS[endpoint])}")
    if fields.get("style_preset") is not None and fields["style_preset"] not in STYLE_PRESETS:
        raise bad("style_preset: is not a known preset")
    strength = number(fields, "strength", 0, 1)
    number(fields, "cfg_scale", 0, 100)
    if endpoint == "ultra" and (image is None) != (strength is None):
        raise bad("strength: is required with image, and only with image")
    if endpoint == "sd3":
        mode = fields.get("mode", "text-to-image")
        if mode not in ("text-to-image", "image-to-image"):
            raise bad("mode: must be text-to-image or image-to-image")
        model = fields.get("model", "sd3.5-large")
        if model not in SD3_MODELS:
            raise bad(f"model: must be one of {', '.join(SD3_MODELS)}")
        if "turbo" in model and "negative_prompt" in fields:
            raise bad("negative_prompt: is not supported by turbo models")
        if mode == "image-to-image" and (image is None or strength is None or "aspect_ratio" in fields):
            raise bad("image-to-image needs image and strength, and takes no aspect_ratio")
        if mode == "text-to-image" and (image is not None or strength is not None):
            raise bad("image and strength: only in image-to-image mode")
    return {"prompt": prompt, "output_format": output_format, "ratio": fields.get("aspect_ratio", "1:1")}


def render(req: dict, seed: int, image: Image.Image | None, blurred: bool) -> bytes:
    size = (image.width // 64 * 64 or 64, image.height // 64 * 64 or 64) if image is not None else RATIOS[req["ratio"]]
    picture = Image.open(io.BytesIO(fake_image(*size, f"{req['prompt']}/{seed}")))
    if blurred:
        picture = picture.filter(ImageFilter.GaussianBlur(24))
    out = io.BytesIO()
    picture.convert("RGB").save(out, PIL_FORMAT[req["output_format"]])
    return out.getvalue()


def create_app(state: EmulatorState) -> FastAPI:
    app = FastAPI()
    state.received = []  # type: ignore[attr-defined]

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {state.api_key}"

    @app.exception_handler(Failure)
    async def failure(_request: Request, exc: Failure) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    @app.get("/_emulator/received")
    async def received() -> dict:
        return {"received": state.received}  # type: ignore[attr-defined]

    @app.post("/v2beta/stable-image/generate/{endpoint}")
    async def generate(endpoint: str, request: Request):
        if endpoint not in FIELDS:
            raise Failure(404, "not_found", f"no endpoint generate/{endpoint}")
        if not authorized(request):
            raise Failure(401, "unauthorized", "authorization: invalid or missing API key")
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            raise Failure(413, "payload_too_large", "the request must be at most 10 MiB")
        accept = request.headers.get("accept", "image/*")
        if accept not in ("image/*", "application/json", "*/*"):
            raise bad("accept: must be image/* or application/json")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise bad("content-type: must be multipart/form-data")
        form = await request.form()
        fields = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}
        files = {k: v for k, v in form.multi_items() if isinstance(v, UploadFile)}
        if set(files) - {"image"}:
            raise bad(f"{', '.join(set(files) - {'image'})}: unexpected file")
        image = await read_image(files["image"]) if "image" in files else None
        state.received.append({"endpoint": endpoint, "fields": fields, "accept": accept,  # type: ignore[attr-defined]
                               "image": image.format if image is not None else None})
        req = validate(endpoint, fields, image)
        if REFUSED_WORD in req["prompt"].lower():
            raise Failure(403, "content_moderation", "Your request was flagged by our content moderation system, "
                          "as a result your request was denied and you were not charged.")
        seed = int(fields.get("seed", "0")) or secrets.randbelow(4294967294) + 1
        blurred = OUTPUT_FLAGGED in req["prompt"].lower()
        data = render(req, seed, image, blurred)
        reason = "CONTENT_FILTERED" if blurred else "SUCCESS"
        request_id = secrets.token_hex(16)
        mime = f"image/{req['output_format']}"
        if accept == "application/json":
            return JSONResponse({"image": base64.b64encode(data).decode(), "finish_reason": reason, "seed": seed},
                                media_type=f"application/json; type={mime}", headers={"x-request-id": request_id})
        return Response(data, media_type=mime,
                        headers={"finish-reason": reason, "seed": str(seed), "x-request-id": request_id})

    return install(app, state, authorized)

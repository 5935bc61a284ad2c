"""Emulator of the Ideogram API (docs/provider-contracts.md §4, provider-contracts-2.md §9).

- `POST /generate` (JSON `{"image_request": {...}}`) and `POST /v1/ideogram-v3/generate`
  (multipart, or JSON as the spec also declares), `Api-Key: <key>`. Fields are checked as
  the OpenAPI states them (enums, ranges, aspect_ratio xor resolution, negative_prompt
  and style_type only on the models that take them); errors are `{"error": "..."}`.
- REFUSED_WORD: 422 with the `GenerateImageSafetyError` body. OUTPUT_FLAGGED: every image
  comes back `is_image_safe: false` with no URL; PARTLY_FLAGGED: every second one does.
- The organisation's in-flight limit counts images: a request that would pass
  `max_inflight_images` (10; `POST /_emulator/ideogram/limits`) answers 429
  `reject_reason: inflight_limit`. A request stays in flight `faults.job_seconds`.
  `GET /_emulator/ideogram/inflight` reports the peak and the rejections.
- Ideogram 3.0's image endpoints (multipart, an `image` file): `edit` and `inpaint` (with a
  black-and-white `mask` of the image's size), `remix` (`image_weight` 1-100), `reframe` (a
  square image to `resolution`, no prompt), `replace-background`; each with only the fields
  the contract gives it, and `character_reference_images` (one) on edit, inpaint and remix.
- Results: temporary URLs (hosted files with an `exp` parameter), `prompt` (rewritten by
  Magic Prompt when it is ON or AUTO), `resolution`, `is_image_safe`, `seed`, `style_type`.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import re
import secrets
import time
from datetime import datetime, timezone

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile

from tests.emulators.harness import REFUSED_WORD, EmulatorState, fake_image, install

OUTPUT_FLAGGED = "flagged-output"
PARTLY_FLAGGED = "partly-flagged"
LEGACY_MODELS = ("V_1", "V_1_TURBO", "V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO", "V_3", "AUTO")
LEGACY_RATIOS = ("ASPECT_10_16", "ASPECT_16_10", "ASPECT_9_16", "ASPECT_16_9", "ASPECT_3_2", "ASPECT_2_3", "ASPECT_4_3",
                 "ASPECT_3_4", "ASPECT_1_1", "ASPECT_1_3", "ASPECT_3_1")
V3_RATIOS = ("1x3", "3x1", "1x2", "2x1", "9x16", "16x9", "10x16", "16x10", "2x3", "3x2", "3x4", "4x3", "4x5", "5x4", "1x1")
LEGACY_STYLES = ("AUTO", "GENERAL", "FICTION", "REALISTIC", "DESIGN", "RENDER_3D", "ANIME", "CUSTOM", "STYLIZED")
V3_STYLES = ("AUTO", "GENERAL", "REALISTIC", "DESIGN", "CUSTOM", "FICTION", "STYLIZED")
MAGIC = ("AUTO", "ON", "OFF")
LEGACY_FIELDS = {"prompt", "model", "aspect_ratio", "resolution", "magic_prompt_option", "magic_prompt_version", "seed",
                 "style_type", "negative_prompt", "num_images", "color_palette"}
V3_FIELDS = {"prompt", "seed", "aspect_ratio", "resolution", "rendering_speed", "magic_prompt", "negative_prompt",
             "num_images", "color_palette", "style_codes", "style_type", "style_preset", "custom_model_uri"}
V3_FILES = {"style_reference_images", "character_reference_images", "character_reference_images_mask"}
SPEEDS = ("FLASH", "TURBO", "BALANCED", "DEFAULT", "QUALITY")
# docs/provider-contracts-2.md §9: the v3 image endpoints, (their files, their required
# fields, the fields they take). Edit (and its new name, inpaint) has no aspect_ratio,
# resolution or negative_prompt; reframe has no prompt; reframe and replace-background no
# style_type, character reference or custom model.
STYLE_FIELDS = {"style_preset", "color_palette", "style_codes"}
EDIT_FIELDS = {"prompt", "magic_prompt", "num_images", "seed", "rendering_speed", "style_type", "custom_model_uri",
               *STYLE_FIELDS}
IMAGE_ENDPOINTS: dict[str, tuple[set[str], set[str], set[str]]] = {
    "edit": ({"image", "mask"}, {"prompt"}, EDIT_FIELDS),
    "inpaint": ({"image", "mask"}, {"prompt"}, EDIT_FIELDS),
    "remix": ({"image"}, {"prompt"}, EDIT_FIELDS | {"image_weight", "resolution", "aspect_ratio", "negative_prompt"}),
    "reframe": ({"image"}, {"resolution"}, {"resolution", "num_images", "seed", "rendering_speed", *STYLE_FIELDS}),
    "replace-background": ({"image"}, {"prompt"},
                           {"prompt", "magic_prompt", "num_images", "seed", "rendering_speed", *STYLE_FIELDS}),
}
CHARACTER_ENDPOINTS = ("edit", "inpaint", "remix")
MB = 1024 * 1024
SAFETY = "Prompt provided failed safety check due to the inclusion of prohibited content."


class Failure(Exception):
    def __init__(self, status: int, error: str, **extra: object) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error, **extra}


def bad(message: str) -> Failure:
    return Failure(400, message)


def integer(value: object, name: str, lo: int, hi: int) -> int:
    if isinstance(value, str) and re.fullmatch(r"\d+", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise bad(f"{name} must be an integer from {lo} to {hi}")
    return value


def pixels(ratio: str) -> tuple[int, int]:
    """About one megapixel at the ratio, sides multiples of 32 (as Ideogram's resolutions)."""
    w, h = (int(x) for x in ratio.removeprefix("ASPECT_").replace("_", "x").split("x"))
    width = round(math.sqrt(1024 * 1024 * w / h) / 32) * 32
    return width, round(width * h / w / 32) * 32


def validate(fields: dict, *, v3: bool, allowed: set[str] | None = None, needs_prompt: bool = True) -> dict:
    allowed = allowed if allowed is not None else (V3_FIELDS if v3 else LEGACY_FIELDS)
    for key in fields:
        if key not in allowed:
            raise bad(f"Unknown field: {key}")
    prompt = fields.get("prompt", "" if not needs_prompt else None)
    if not isinstance(prompt, str) or (needs_prompt and not prompt):
        raise bad("prompt is required")
    model = "V_3" if v3 else fields.get("model", "V_2")
    if model not in LEGACY_MODELS:
        raise bad(f"model must be one of {', '.join(LEGACY_MODELS)}")
    ratios = V3_RATIOS if v3 else LEGACY_RATIOS
    if "aspect_ratio" in fields and "resolution" in fields:
        raise bad("aspect_ratio and resolution cannot be used together")
    ratio = fields.get("aspect_ratio", "1x1" if v3 else "ASPECT_1_1")
    if ratio not in ratios:
        raise bad(f"aspect_ratio must be one of {', '.join(ratios)}")
    size = pixels(ratio)
    if "resolution" in fields:
        m = re.fullmatch(r"(?:RESOLUTION_)?(\d+)[_x](\d+)", str(fields["resolution"]))
        if not m:
            raise bad("resolution is not a supported resolution")
        size = (int(m[1]), int(m[2]))
    seed = integer(fields["seed"], "seed", 0, 2147483647) if "seed" in fields else secrets.randbelow(2147483648)
    n = integer(fields.get("num_images", 1), "num_images", 1, 8)
    magic_key = "magic_prompt" if v3 else "magic_prompt_option"
    magic = fields.get(magic_key, "AUTO")
    if magic not in MAGIC:
        raise bad(f"{magic_key} must be one of AUTO, ON, OFF")
    style = fields.get("style_type")
    if style is not None:
        if not v3 and model in ("V_1", "V_1_TURBO"):
            raise bad("style_type is only supported by V_2 and above")
        if style not in (V3_STYLES if v3 else LEGACY_STYLES):
            raise bad("style_type is not a valid style")
    if "negative_prompt" in fields and not v3 and model not in ("V_1", "V_1_TURBO", "V_2", "V_2_TURBO"):
        raise bad(f"negative_prompt is not supported by {model}")
    if "color_palette" in fields and not v3 and model in ("V_1", "V_1_TURBO", "V_2A", "V_2A_TURBO"):
        raise bad(f"color_palette is not supported by {model}")
    if v3 and fields.get("rendering_speed", "DEFAULT") not in SPEEDS:
        raise bad(f"rendering_speed must be one of {', '.join(SPEEDS)}")
    if v3 and "style_codes" in fields and ("style_type" in fields):
        raise bad("style_codes cannot be combined with style_type")
    return {"prompt": prompt, "size": size, "seed": seed, "n": n, "magic": magic,
            "style": style or ("GENERAL" if v3 else "AUTO")}


def create_app(state: EmulatorState) -> FastAPI:
    app = FastAPI()
    state.received = []  # type: ignore[attr-defined]
    limits = {"max_inflight_images": 10, "inflight": 0, "peak": 0, "rejected": 0}

    def authorized(request: Request) -> bool:
        return request.headers.get("api-key") == state.api_key

    @app.exception_handler(Failure)
    async def failure(_request: Request, exc: Failure) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    @app.get("/_emulator/received")
    async def received() -> dict:
        return {"received": state.received}  # type: ignore[attr-defined]

    @app.post("/_emulator/ideogram/limits")
    async def set_limits(request: Request) -> dict:
        limits.update(max_inflight_images=int((await request.json())["max_inflight_images"]), peak=0, rejected=0)
        return {"ok": True}

    served = {"inpaint": True}

    @app.post("/_emulator/ideogram/endpoints")
    async def set_endpoints(request: Request) -> dict:
        """`{"inpaint": false}`: an upstream that still has only the legacy /edit."""
        served.update((await request.json()))
        return {"ok": True}

    @app.get("/_emulator/ideogram/inflight")
    async def inflight() -> dict:
        return dict(limits)

    async def run(path: str, fields: dict, v3: bool, *, allowed: set[str] | None = None, needs_prompt: bool = True,
                  size: tuple[int, int] | None = None, files: dict | None = None) -> JSONResponse:
        entry = {"path": path, "fields": fields, **({"files": files} if files else {})}
        state.received.append(entry)  # type: ignore[attr-defined]
        req = validate(fields, v3=v3, allowed=allowed, needs_prompt=needs_prompt)
        if size is not None:
            req["size"] = size
        if REFUSED_WORD in req["prompt"].lower():
            raise Failure(422, SAFETY)
        if limits["inflight"] + req["n"] > limits["max_inflight_images"]:
            limits["rejected"] += 1
            raise Failure(429, "Too many images in flight for this organization.", reject_reason="inflight_limit",
                          max_inflight_requests=limits["max_inflight_images"])
        limits["inflight"] += req["n"]
        limits["peak"] = max(limits["peak"], limits["inflight"])
        try:
            if state.faults.job_seconds:
                await asyncio.sleep(state.faults.job_seconds)
        finally:
            limits["inflight"] -= req["n"]
        lowered = req["prompt"].lower()
        prompt = req["prompt"] if req["magic"] == "OFF" or not req["prompt"] else (
            f"{req['prompt']}, intricate details, soft cinematic light")
        data = []
        for i in range(req["n"]):
            safe = not (OUTPUT_FLAGGED in lowered or (PARTLY_FLAGGED in lowered and i % 2 == 1))
            url = None
            if safe:
                png = fake_image(*req["size"], f"{req['prompt']}/{req['seed']}/{i}")
                url = state.host_file(png) + f"?exp={int(time.time()) + 3600}&sig={secrets.token_hex(8)}"
            data.append({"url": url, "prompt": prompt, "resolution": "x".join(map(str, req["size"])),
                         "is_image_safe": safe, "seed": (req["seed"] + i) % 2147483648, "style_type": req["style"]})
        return JSONResponse({"created": datetime.now(timezone.utc).isoformat(), "data": data})

    @app.post("/generate")
    async def legacy(request: Request):
        if not authorized(request):
            raise Failure(401, "Invalid API key")
        try:
            body = await request.json()
        except ValueError:
            raise bad("The request body must be JSON") from None
        if not isinstance(body, dict) or set(body) != {"image_request"} or not isinstance(body["image_request"], dict):
            raise bad("The request body must be {\"image_request\": {...}}")
        return await run("/generate", body["image_request"], v3=False)

    @app.post("/v1/ideogram-v3/generate")
    async def v3(request: Request):
        if not authorized(request):
            raise Failure(401, "Invalid API key")
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            fields = await request.json()
            if not isinstance(fields, dict):
                raise bad("The request body must be a JSON object")
        elif content_type.startswith("multipart/form-data"):
            form = await request.form()
            fields = {}
            parts: dict[str, list] = {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if key not in V3_FILES:
                        raise bad(f"Unknown file field: {key}")
                    parts.setdefault(key, []).append(value)
                elif key == "color_palette":
                    fields[key] = json.loads(value)
                else:
                    fields[key] = value
        else:
            raise bad("Content-Type must be multipart/form-data or application/json")
        files = None
        if content_type.startswith("multipart/form-data") and parts:
            references = parts.get("character_reference_images", [])
            if len(references) > 1:
                raise bad("character_reference_images takes one image")
            if "character_reference_images_mask" in parts and len(parts["character_reference_images_mask"]) != len(references):
                raise bad("character_reference_images_mask must match character_reference_images")
            files = {}
            for key, values in parts.items():
                images = [await image_part(v, key) for v in values]
                files[key] = [{"content_type": v.content_type, "size": list(i.size)} for v, i in zip(values, images)]
        return await run("/v1/ideogram-v3/generate", fields, v3=True, files=files)

    async def image_part(part: object, name: str) -> Image.Image:
        if not isinstance(part, UploadFile):
            raise bad(f"{name} must be a file")
        data = await part.read()
        if len(data) > 10 * MB:
            raise bad(f"{name} must be at most 10MB")
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (UnidentifiedImageError, OSError):
            raise bad(f"{name} is not a readable image") from None
        if image.format not in ("PNG", "JPEG", "WEBP"):
            raise bad(f"{name} must be JPEG, PNG or WebP")
        return image

    @app.post("/v1/ideogram-v3/{endpoint}")
    async def v3_image(endpoint: str, request: Request):
        """edit / inpaint (image + black-and-white mask, black = edit), remix (image_weight),
        reframe (a square image to `resolution`, no prompt), replace-background."""
        if endpoint not in IMAGE_ENDPOINTS or (endpoint == "inpaint" and not served["inpaint"]):
            raise Failure(404, f"Not found: /v1/ideogram-v3/{endpoint}")
        if not authorized(request):
            raise Failure(401, "Invalid API key")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise bad("Content-Type must be multipart/form-data")
        required_files, required, allowed = IMAGE_ENDPOINTS[endpoint]
        takes = required_files | (V3_FILES if endpoint in CHARACTER_ENDPOINTS else {"style_reference_images"})
        form = await request.form()
        fields: dict = {}
        parts: dict[str, list] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in takes:
                    raise bad(f"Unknown file field: {key}")
                parts.setdefault(key, []).append(value)
            elif key == "color_palette":
                fields[key] = json.loads(value)
            else:
                fields[key] = value
        for name in sorted(required_files - set(parts)):
            raise bad(f"{name} is required")
        for name in sorted(required - set(fields)):
            raise bad(f"{name} is required")
        image = await image_part(parts["image"][0], "image")
        summary = {k: [{"content_type": p.content_type} for p in v] for k, v in parts.items()}
        size = image.size
        if "mask" in parts:
            mask = await image_part(parts["mask"][0], "mask")
            if mask.size != image.size:
                raise bad("mask must have the same dimensions as the image")
            levels = mask.convert("L").histogram()
            if mask.mode not in ("L", "1") or any(levels[1:255]):
                raise bad("mask must be a black and white image (black marks the area to edit)")
            summary["mask"][0]["black_pixels"] = levels[0]
        references = parts.get("character_reference_images", [])
        if len(references) > 1:
            raise bad("character_reference_images takes one image")
        if "character_reference_images_mask" in parts and len(parts["character_reference_images_mask"]) != len(references):
            raise bad("character_reference_images_mask must match character_reference_images")
        if endpoint == "remix":
            integer(fields.get("image_weight", 50), "image_weight", 1, 100)
            if "aspect_ratio" not in fields and "resolution" not in fields:
                size = image.size
        if endpoint == "reframe":
            if image.width != image.height:
                raise bad("reframe takes a square image")
            m = re.fullmatch(r"(\d+)x(\d+)", str(fields["resolution"]))
            if not m:
                raise bad("resolution is not a supported resolution")
            size = (int(m[1]), int(m[2]))
        explicit = endpoint == "remix" and ("aspect_ratio" in fields or "resolution" in fields)
        return await run(f"/v1/ideogram-v3/{endpoint}", fields, v3=True, allowed=allowed,
                         needs_prompt=endpoint != "reframe", size=None if explicit else size, files=summary)

    return install(app, state, authorized)

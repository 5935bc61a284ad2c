"""Emulator of the OpenAI Images API (docs/provider-contracts.md §1), as strict as the real one.

- `POST /v1/images/generations` (JSON), `/v1/images/edits` and `/v1/images/variations`
  (multipart), `Authorization: Bearer <key>`; errors are `{"error": {message, type, param,
  code}}`: unknown fields `unknown_parameter`, fields a model does not take
  `unsupported_parameter` (and `response_format` on GPT image models `unknown_parameter`,
  as reported), wrong sizes `invalid_size`, other bad values `invalid_value`.
- Moderation: REFUSED_WORD in the prompt is refused at input, 400, in the model family's
  own shape (dall-e-2 `content_policy_violation`; dall-e-3 the null-code
  `image_generation_user_error`; GPT image `moderation_blocked`). OUTPUT_FLAGGED is refused
  at output: a 400 for plain calls, an error event after the partial images for streams.
- GPT image models: base64 in the asked output_format/compression (an RGBA PNG/WebP for a
  transparent background), `usage`, and with `stream` the SSE events
  `image_generation.partial_image` / `.completed` (`image_edit.*` for edits).
  DALL·E: PNG as `url` (hosted, like the 60-minute links) or `b64_json`; dall-e-3 adds
  `revised_prompt`. Every answer has an `x-request-id` header.
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import time
from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile

from tests.emulators.harness import REFUSED_WORD, EmulatorState, fake_image, install

OUTPUT_FLAGGED = "flagged-output"
GPT_MODELS = ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2", "gpt-image-2-2026-04-21", "chatgpt-image-latest")
MODELS = ("dall-e-2", "dall-e-3", *GPT_MODELS)
PROMPT_LIMIT = {"dall-e-2": 1000, "dall-e-3": 4000}
SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt": ("1024x1024", "1536x1024", "1024x1536", "auto"),
}
QUALITIES = {"dall-e-2": ("standard", "auto"), "dall-e-3": ("standard", "hd", "auto"), "gpt": ("low", "medium", "high", "auto")}
GPT_ONLY = ("background", "moderation", "output_format", "output_compression", "stream", "partial_images")
GENERATION_FIELDS = {"prompt", "model", "n", "size", "quality", "style", "response_format", "user", *GPT_ONLY}
EDIT_FIELDS = {"prompt", "model", "n", "size", "quality", "background", "input_fidelity", "output_format",
               "output_compression", "response_format", "stream", "partial_images", "user"}
VARIATION_FIELDS = {"model", "n", "size", "response_format", "user"}
# Output tokens per image of a 1024x1024 picture, by quality (the published gpt-image-1 figures).
TOKENS = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}
PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
MB = 1024 * 1024


class Invalid(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = "invalid_value",
                 type_: str = "invalid_request_error", status: int = 400) -> None:
        super().__init__(message)
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        self.status = status


def family(model: str) -> str:
    return model if model.startswith("dall-e") else "gpt"


def refuse(model: str, prompt: str, stage: str = "input") -> None:
    if family(model) == "dall-e-2":
        raise Invalid("Your request was rejected as a result of our safety system. Your prompt may contain text "
                      "that is not allowed by our safety system.", code="content_policy_violation")
    if family(model) == "dall-e-3":
        raise Invalid(None, code=None, type_="image_generation_user_error")  # type: ignore[arg-type]
    err = Invalid("Your request was rejected by the safety system. If you believe this is an error, contact us.",
                  param="", code="moderation_blocked", type_="image_generation_user_error")
    err.body["error"]["moderation_details"] = {"moderation_stage": stage, "categories": ["emulated"]}
    raise err


def pixels(size: str) -> tuple[int, int]:
    w, _, h = size.partition("x")
    return int(w), int(h)


def check_size(model: str, size: str, edits: bool = False) -> None:
    fam = family(model)
    if model.startswith("gpt-image-2") and size != "auto":
        m = re.fullmatch(r"(\d+)x(\d+)", size)
        ok = bool(m)
        if m:
            w, h = int(m[1]), int(m[2])
            ok = w % 16 == 0 and h % 16 == 0 and 1 / 3 <= w / h <= 3 and max(w, h) <= 3840 and w * h <= 3840 * 2160
        if not ok:
            raise Invalid(f"Invalid size '{size}'. Both sides must be multiples of 16, with an aspect ratio between "
                          "1:3 and 3:1, at most 3840x2160.", "size", "invalid_size")
        return
    allowed = SIZES[fam] if not (edits and fam == "gpt") else (*SIZES["gpt"], "256x256", "512x512")
    if size not in allowed:
        raise Invalid(f"Invalid size '{size}'. Supported sizes are {', '.join(allowed)}.", "size", "invalid_size")


def as_int(value: object, name: str, lo: int, hi: int) -> int:
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"Invalid type for '{name}': expected an integer.", name, "invalid_type")
    if not lo <= value <= hi:
        raise Invalid(f"Invalid '{name}': must be between {lo} and {hi}, got {value}.", name)
    return value


def as_bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise Invalid(f"Invalid type for '{name}': expected a boolean.", name, "invalid_type")


def one_of(value: object, allowed: tuple, name: str) -> str:
    if value not in allowed:
        raise Invalid(f"Invalid value: '{value}'. Supported values are: {', '.join(map(repr, allowed))}.", name)
    return str(value)


def check_common(body: dict, model: str, allowed_fields: set[str], *, edits: bool = False) -> dict:
    """Validation shared by the three endpoints; returns the resolved request."""
    for key in body:
        if key not in allowed_fields:
            raise Invalid(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
    fam = family(model)
    if fam != "gpt":
        for key in GPT_ONLY:
            if key in body:
                raise Invalid(f"Unsupported parameter: '{key}' is not supported with this model.", key, "unsupported_parameter")
    elif "response_format" in body:
        raise Invalid("Unknown parameter: 'response_format'.", "response_format", "unknown_parameter")
    if "style" in body and model != "dall-e-3":
        raise Invalid("Unsupported parameter: 'style' is not supported with this model.", "style", "unsupported_parameter")
    req = {"model": model, "n": as_int(body.get("n", 1), "n", 1, 10)}
    if model == "dall-e-3" and req["n"] != 1:
        raise Invalid("You must provide n=1 for this model.", "n")
    default_size = "auto" if fam == "gpt" else "1024x1024"
    req["size"] = str(body.get("size", default_size))
    check_size(model, req["size"], edits)
    qualities = ("standard", "low", "medium", "high", "auto") if edits else QUALITIES[fam]
    req["quality"] = one_of(body.get("quality", "auto"), qualities, "quality")
    if "style" in body:
        one_of(body["style"], ("vivid", "natural"), "style")
    req["response_format"] = one_of(body.get("response_format", "url"), ("url", "b64_json"), "response_format")
    if fam == "gpt":
        req["output_format"] = one_of(body.get("output_format", "png"), ("png", "jpeg", "webp"), "output_format")
        req["background"] = one_of(body.get("background", "auto"), ("transparent", "opaque", "auto"), "background")
        if "moderation" in body:
            one_of(body["moderation"], ("low", "auto"), "moderation")
        req["compression"] = as_int(body.get("output_compression", 100), "output_compression", 0, 100)
        if req["output_format"] == "png" and req["compression"] < 100:
            raise Invalid("Compression less than 100 is not supported for PNG output format.", "output_compression")
        if req["background"] == "transparent" and req["output_format"] == "jpeg":
            raise Invalid("Transparent background requires output_format png or webp.", "background")
        if req["background"] == "transparent" and model.startswith("gpt-image-2"):
            raise Invalid("Transparent background is not supported for this model.", "background")
        req["stream"] = as_bool(body.get("stream", False), "stream")
        req["partial_images"] = as_int(body.get("partial_images", 0), "partial_images", 0, 3)
    if "input_fidelity" in body:
        if model == "gpt-image-1-mini" or fam != "gpt":
            raise Invalid("Unsupported parameter: 'input_fidelity' is not supported with this model.", "input_fidelity",
                          "unsupported_parameter")
        one_of(body["input_fidelity"], ("high", "low"), "input_fidelity")
    return req


def check_prompt(body: dict, model: str) -> str:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise Invalid("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    limit = PROMPT_LIMIT.get(model, 32000)
    if len(prompt) > limit:
        raise Invalid(f"Invalid 'prompt': string too long. Expected a string with maximum length {limit}, but got "
                      f"a string with length {len(prompt)} instead.", "prompt", "string_above_max_length")
    if REFUSED_WORD in prompt.lower():
        refuse(model, prompt)
    return prompt


def render(req: dict, seed: str, size: tuple[int, int] | None = None) -> bytes:
    """One image as the model would encode it."""
    w, h = size or pixels("1024x1024" if req["size"] == "auto" else req["size"])
    if family(req["model"]) != "gpt":
        return fake_image(w, h, seed)
    fmt = PIL_FORMAT[req["output_format"]]
    image = Image.open(io.BytesIO(fake_image(w, h, seed)))
    if req["background"] == "transparent":
        image = image.convert("RGBA")
        alpha = Image.new("L", (w, h), 0)
        alpha.paste(255, (w // 6, h // 6, w - w // 6, h - h // 6))
        image.putalpha(alpha)
    out = io.BytesIO()
    image.save(out, fmt, **({"quality": req["compression"]} if fmt != "PNG" else {}))
    return out.getvalue()


def usage(req: dict, prompt: str, input_images: int = 0) -> dict:
    text = max(1, len(prompt.split()))
    image_in = 194 * input_images
    out = TOKENS[req.get("quality") if req.get("quality") in TOKENS else "auto"] * req["n"]
    return {"input_tokens": text + image_in, "input_tokens_details": {"text_tokens": text, "image_tokens": image_in},
            "output_tokens": out, "output_tokens_details": {"image_tokens": out, "text_tokens": 0},
            "total_tokens": text + image_in + out}


def answer(state: EmulatorState, req: dict, prompt: str, seeds: list[str], input_images: int = 0,
           size: tuple[int, int] | None = None, event_prefix: str = "image_generation"):
    headers = {"x-request-id": "req_" + secrets.token_hex(16)}
    model = req["model"]
    flagged = OUTPUT_FLAGGED in prompt.lower()
    if family(model) == "gpt" and req.get("stream"):
        return StreamingResponse(stream(req, prompt, seeds, input_images, size, event_prefix, flagged),
                                 media_type="text/event-stream", headers=headers)
    if flagged:
        refuse(model, prompt, stage="output")
    data = []
    for seed in seeds:
        png = render(req, seed, size)
        if family(model) == "gpt" or req["response_format"] == "b64_json":
            item = {"b64_json": base64.b64encode(png).decode()}
        else:
            item = {"url": state.host_file(png) + f"?se={int(time.time()) + 3600}&sig={secrets.token_hex(8)}"}
        if model == "dall-e-3":
            item["revised_prompt"] = f"A detailed, carefully composed rendering of {prompt}"
        data.append(item)
    body: dict = {"created": int(time.time()), "data": data}
    if family(model) == "gpt":
        body.update(background="transparent" if req["background"] == "transparent" else "opaque",
                    output_format=req["output_format"], quality=req["quality"], size=req["size"],
                    usage=usage(req, prompt, input_images))
    return JSONResponse(body, headers=headers)


def stream(req: dict, prompt: str, seeds: list[str], input_images: int, size, prefix: str, flagged: bool) -> Iterator[str]:
    common = {"background": req["background"], "output_format": req["output_format"], "quality": req["quality"],
              "size": req["size"]}
    for seed in seeds:
        for index in range(req["partial_images"]):
            partial = render(req, f"{seed}/partial{index}", size)
            yield sse(f"{prefix}.partial_image", {"type": f"{prefix}.partial_image", "b64_json": base64.b64encode(partial).decode(),
                                                  "partial_image_index": index, "created_at": int(time.time()), **common})
        if flagged:
            yield sse("error", {"type": "error", "error": {
                "message": "Your request was rejected by the safety system.", "type": "image_generation_user_error",
                "param": None, "code": "moderation_blocked", "moderation_details": {"moderation_stage": "output"}}})
            return
        final = render(req, seed, size)
        yield sse(f"{prefix}.completed", {"type": f"{prefix}.completed", "b64_json": base64.b64encode(final).decode(),
                                          "created_at": int(time.time()), **common,
                                          "usage": usage({**req, "n": 1}, prompt, input_images)})


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def read_image(part: object, name: str, *, png_only: bool, max_mb: int, square: bool = False) -> Image.Image:
    if not isinstance(part, UploadFile):
        raise Invalid(f"Invalid '{name}': expected a file.", name, "invalid_type")
    data = await part.read()
    if len(data) > max_mb * MB:
        raise Invalid(f"Invalid '{name}': must be less than {max_mb} MB.", name, "invalid_image")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError):
        raise Invalid(f"Invalid '{name}': could not read the image.", name, "invalid_image_format") from None
    allowed = ("PNG",) if png_only else ("PNG", "JPEG", "WEBP")
    if image.format not in allowed:
        raise Invalid(f"Invalid '{name}': unsupported format {image.format}; supported: {', '.join(allowed)}.",
                      name, "invalid_image_format")
    if square and image.width != image.height:
        raise Invalid(f"Invalid '{name}': the image must be square.", name, "invalid_image")
    return image


def create_app(state: EmulatorState) -> FastAPI:
    app = FastAPI()
    # What the API received (fields; file parts by name with their format and size), for
    # tests to check what an adapter sends; also at GET /_emulator/received.
    state.received = []  # type: ignore[attr-defined]

    @app.get("/_emulator/received")
    async def received() -> dict:
        return {"received": state.received}  # type: ignore[attr-defined]

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {state.api_key}"

    @app.exception_handler(Invalid)
    async def invalid(_request: Request, exc: Invalid) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    def authenticate(request: Request) -> None:
        if not authorized(request):
            given = (request.headers.get("authorization") or "")[7:]
            raise Invalid(f"Incorrect API key provided: {given[:3]}***{given[-4:]}. You can find your API key at "
                          "https://platform.openai.com/account/api-keys.", None, "invalid_api_key", status=401)

    @app.post("/v1/images/generations")
    async def generations(request: Request):
        authenticate(request)
        try:
            body = await request.json()
        except ValueError:
            raise Invalid("We could not parse the JSON body of your request.", None, None) from None
        if not isinstance(body, dict):
            raise Invalid("The request body must be a JSON object.", None, None)
        state.received.append({"path": request.url.path, "fields": body, "files": {}})  # type: ignore[attr-defined]
        model = body.get("model") or ("gpt-image-1" if any(k in body for k in GPT_ONLY) else "dall-e-2")
        one_of(model, MODELS, "model")
        prompt = check_prompt(body, model)
        req = check_common(body, model, GENERATION_FIELDS)
        return answer(state, req, prompt, [f"{prompt}/{i}" for i in range(req["n"])])

    async def form_of(request: Request) -> tuple[dict, dict[str, list]]:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise Invalid("Invalid Content-Type header: expected multipart/form-data.", None, None)
        form = await request.form()
        fields, files = {}, {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.setdefault(key, []).append(value)
            else:
                fields[key] = value
        summary = {}
        for key, parts in files.items():
            summary[key] = []
            for part in parts:
                data = await part.read()
                await part.seek(0)
                summary[key].append({"filename": part.filename, "content_type": part.content_type, "bytes": len(data)})
        state.received.append({"path": request.url.path, "fields": fields, "files": summary})  # type: ignore[attr-defined]
        return fields, files

    @app.post("/v1/images/edits")
    async def edits(request: Request):
        authenticate(request)
        fields, files = await form_of(request)
        for key in files:
            if key not in ("image", "image[]", "mask"):
                raise Invalid(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
        model = fields.get("model") or "gpt-image-1.5"
        if model == "dall-e-3" or model not in MODELS:
            raise Invalid(f"Invalid model '{model}'. Edits support dall-e-2 and GPT image models.", "model")
        parts = files.get("image", []) + files.get("image[]", [])
        if not parts:
            raise Invalid("Missing required parameter: 'image'.", "image", "missing_required_parameter")
        dalle = model == "dall-e-2"
        if dalle and len(parts) != 1:
            raise Invalid("dall-e-2 takes exactly one image.", "image")
        if len(parts) > 16:
            raise Invalid("At most 16 images.", "image")
        images = [await read_image(p, "image", png_only=dalle, max_mb=4 if dalle else 50, square=dalle) for p in parts]
        if "mask" in files:
            mask = await read_image(files["mask"][0], "mask", png_only=True, max_mb=4)
            if mask.mode not in ("RGBA", "LA", "L"):
                raise Invalid(f"Invalid input image - format must be in ['RGBA', 'LA', 'L'], got {mask.mode}.", "mask")
            if mask.size != images[0].size:
                raise Invalid("Invalid mask image - mask size does not match image size.", "mask")
        prompt = check_prompt(fields, model)
        req = check_common(fields, model, EDIT_FIELDS, edits=True)
        size = images[0].size if req["size"] == "auto" and images[0].size in ((1024, 1024), (1536, 1024), (1024, 1536)) else None
        return answer(state, req, prompt, [f"edit/{prompt}/{i}" for i in range(req["n"])], len(images), size, "image_edit")

    @app.post("/v1/images/variations")
    async def variations(request: Request):
        authenticate(request)
        fields, files = await form_of(request)
        model = fields.get("model") or "dall-e-2"
        if model != "dall-e-2":
            raise Invalid(f"Invalid model '{model}'. Variations support dall-e-2 only.", "model")
        if set(files) != {"image"} or len(files["image"]) != 1:
            raise Invalid("Missing required parameter: 'image' (one file).", "image", "missing_required_parameter")
        await read_image(files["image"][0], "image", png_only=True, max_mb=4, square=True)
        req = check_common(fields, model, VARIATION_FIELDS)
        return answer(state, req, "", [f"variation/{secrets.token_hex(4)}/{i}" for i in range(req["n"])])

    return install(app, state, authorized)

"""Emulator of the Gemini API's image output through generateContent
(docs/provider-contracts-2.md §14, which replaces part 1's §8).

- `POST /v1beta/models/{model}:generateContent`, key in `x-goog-api-key` (or `?key=`); a
  wrong key is Google's 400 INVALID_ARGUMENT with ErrorInfo reason API_KEY_INVALID;
  unknown models 404 NOT_FOUND; unknown fields and bad values 400 INVALID_ARGUMENT
  ("Invalid JSON payload received. Unknown name ..."), in the Google RPC error shape.
- Image models (GA): `gemini-3.1-flash-image`, `gemini-3-pro-image`,
  `gemini-3.1-flash-lite-image`, `gemini-2.5-flash-image`; the shut-down previews and
  Imagen answer 404 NOT_FOUND. With IMAGE in `responseModalities`, one candidate with one
  PNG `inlineData` part sized by `imageConfig.aspectRatio` (1:1, 2:3, 3:2, 3:4, 4:3, 9:16,
  16:9, 21:9; Google's table for 1K, doubled for 2K, four times for 4K); without it, text
  only. `imageSize` (1K/2K/4K, uppercase K) only on the gemini-3 models, and only 1K on
  gemini-3.1-flash-lite-image.
- REFUSED_WORD: the prompt is blocked, a 200 with `promptFeedback.blockReason` and no
  candidates. OUTPUT_FLAGGED: a candidate with `finishReason: IMAGE_SAFETY` and no image.
  NO_IMAGE_WORD: `finishReason: NO_IMAGE`, text only.
- `usageMetadata` counts tokens (1290 per output image, 258 per input image).
"""

from __future__ import annotations

import base64
import io
import secrets

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError

from tests.emulators.harness import REFUSED_WORD, EmulatorState, fake_image, install

OUTPUT_FLAGGED = "flagged-output"
NO_IMAGE_WORD = "no-image-please"
MODELS = ("gemini-3.1-flash-image", "gemini-3-pro-image", "gemini-3.1-flash-lite-image", "gemini-2.5-flash-image")
SIZES = {"1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
         "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672)}
REQUEST_FIELDS = {"contents", "generationConfig", "safetySettings", "systemInstruction", "tools", "toolConfig", "cachedContent"}
CONFIG_FIELDS = {"responseModalities", "imageConfig", "candidateCount", "temperature", "topP", "topK", "maxOutputTokens",
                 "stopSequences", "seed"}
OUTPUT_TOKENS = 1290
INPUT_IMAGE_TOKENS = 258


class Failure(Exception):
    def __init__(self, code: int, status: str, message: str, details: list | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.body = {"error": {"code": code, "message": message, "status": status, "details": details or []}}


def invalid(message: str) -> Failure:
    return Failure(400, "INVALID_ARGUMENT", message)


def unknown(name: str, where: str) -> Failure:
    return invalid(f'Invalid JSON payload received. Unknown name "{name}" at \'{where}\': Cannot find field.')


def parts_of(body: dict) -> tuple[str, int]:
    """(prompt text, number of input images) of the single user turn."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise invalid("* GenerateContentRequest.contents: contents is not specified")
    text, images = [], 0
    for content in contents:
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts:
            raise invalid("* GenerateContentRequest.contents[0].parts: contents.parts must not be empty.")
        for part in parts:
            if not isinstance(part, dict) or len(part) != 1:
                raise invalid("* GenerateContentRequest.contents.parts: a part must have exactly one data field")
            if "text" in part:
                text.append(str(part["text"]))
            elif "inlineData" in part:
                data = part["inlineData"]
                if not isinstance(data, dict) or set(data) != {"mimeType", "data"}:
                    raise invalid("* inlineData: mimeType and data are required")
                try:
                    Image.open(io.BytesIO(base64.b64decode(data["data"], validate=True))).verify()
                except (ValueError, UnidentifiedImageError, OSError):
                    raise invalid("Unable to process input image. Please retry or report in https://developers.generativeai.google/guide/troubleshooting") from None
                images += 1
            else:
                raise unknown(next(iter(part)), "contents[0].parts[0]")
    return " ".join(text), images


SCALE = {"1K": 1, "2K": 2, "4K": 4}


def check_config(model: str, config: object) -> tuple[bool, str, int]:
    """(image output asked for, aspect ratio, scale of imageSize over 1K)."""
    if config is None:
        return False, "1:1", 1
    if not isinstance(config, dict):
        raise invalid("generationConfig must be an object")
    for key in config:
        if key not in CONFIG_FIELDS:
            raise unknown(key, "generation_config")
    modalities = config.get("responseModalities", ["TEXT"])
    if not isinstance(modalities, list) or any(m not in ("TEXT", "IMAGE") for m in modalities):
        raise invalid("* GenerateContentRequest.generation_config.response_modalities: unsupported modality")
    image_config = config.get("imageConfig") or {}
    for key in image_config:
        if key not in ("aspectRatio", "imageSize", "personGeneration"):
            raise unknown(key, "generation_config.image_config")
    if image_config.get("personGeneration", "ALLOW_ADULT") not in ("ALLOW_ALL", "ALLOW_ADULT", "ALLOW_NONE"):
        raise invalid(f"Invalid value at 'generation_config.image_config.person_generation': {image_config['personGeneration']}")
    ratio = image_config.get("aspectRatio", "1:1")
    if ratio not in SIZES:
        raise invalid(f"Unsupported aspect ratio: {ratio}. Supported: {', '.join(SIZES)}")
    size = image_config.get("imageSize", "1K")
    if "imageSize" in image_config:
        allowed = ("1K",) if "lite" in model else ("1K", "2K", "4K")
        if not model.startswith("gemini-3") or size not in allowed:
            raise invalid("image_size is not supported for this model or value")
    return "IMAGE" in modalities, ratio, SCALE[size]


def usage(prompt: str, images_in: int, images_out: int) -> dict:
    text = max(1, len(prompt.split()))
    details = [{"modality": "TEXT", "tokenCount": text}]
    if images_in:
        details.append({"modality": "IMAGE", "tokenCount": INPUT_IMAGE_TOKENS * images_in})
    out = OUTPUT_TOKENS * images_out + 8
    prompt_tokens = text + INPUT_IMAGE_TOKENS * images_in
    return {"promptTokenCount": prompt_tokens, "candidatesTokenCount": out, "totalTokenCount": prompt_tokens + out,
            "promptTokensDetails": details,
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": OUTPUT_TOKENS * images_out}]}


def create_app(state: EmulatorState) -> FastAPI:
    app = FastAPI()
    state.received = []  # type: ignore[attr-defined]

    def authorized(request: Request) -> bool:
        return state.api_key in (request.headers.get("x-goog-api-key"), request.query_params.get("key"))

    @app.exception_handler(Failure)
    async def failure(_request: Request, exc: Failure) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.code)

    @app.get("/_emulator/received")
    async def received() -> dict:
        return {"received": state.received}  # type: ignore[attr-defined]

    @app.post("/v1beta/models/{target}")
    async def generate(target: str, request: Request):
        model, _, method = target.partition(":")
        if method != "generateContent":
            raise Failure(404, "NOT_FOUND", f"Method {method!r} not found")
        if not authorized(request):
            given = request.headers.get("x-goog-api-key") or request.query_params.get("key") or ""
            raise Failure(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": f"Invalid API key: {given}"}])
        if model not in MODELS:
            raise Failure(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, or is not supported "
                          "for generateContent.")
        try:
            body = await request.json()
        except ValueError:
            raise invalid("Invalid JSON payload received.") from None
        if not isinstance(body, dict):
            raise invalid("Invalid JSON payload received. Expected an object.")
        for key in body:
            if key not in REQUEST_FIELDS:
                raise unknown(key, "")
        prompt, images_in = parts_of(body)
        wants_image, ratio, scale = check_config(model, body.get("generationConfig"))
        state.received.append({"model": model, "prompt": prompt, "images": images_in,  # type: ignore[attr-defined]
                               "generationConfig": body.get("generationConfig")})
        answer: dict = {"responseId": secrets.token_urlsafe(16), "modelVersion": model}
        lowered = prompt.lower()
        if REFUSED_WORD in lowered:
            answer.update(promptFeedback={"blockReason": "PROHIBITED_CONTENT"}, usageMetadata=usage(prompt, images_in, 0))
            return answer
        if OUTPUT_FLAGGED in lowered:
            candidate = {"content": {"role": "model", "parts": []}, "finishReason": "IMAGE_SAFETY", "index": 0}
        elif NO_IMAGE_WORD in lowered or not wants_image:
            candidate = {"content": {"role": "model", "parts": [{"text": "Here is a description instead of an image."}]},
                         "finishReason": "NO_IMAGE" if wants_image else "STOP", "index": 0}
        else:
            width, height = SIZES[ratio]
            png = fake_image(width * scale, height * scale, f"{model}/{prompt}/{secrets.token_hex(4)}")
            candidate = {"content": {"role": "model", "parts": [
                {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode()}}]},
                "finishReason": "STOP", "index": 0}
        images_out = 1 if candidate["content"]["parts"] and "inlineData" in candidate["content"]["parts"][0] else 0
        answer.update(candidates=[candidate], usageMetadata=usage(prompt, images_in, images_out))
        return answer

    return install(app, state, authorized)

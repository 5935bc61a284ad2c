"""Emulator of Imagen 4 on Vertex AI's `:predict`, and of Google's OAuth token endpoint
(docs/provider-contracts-2.md §14, "Imagen 4 on Vertex AI").

- `POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:predict`
  with `Authorization: Bearer <token>`: the emulator's key (a token as `gcloud auth
  print-access-token` gives) or a token its `/token` endpoint minted and that has not
  expired. Anything else is 401 UNAUTHENTICATED in the Google RPC shape.
- Models `imagen-4.0-generate-001`, `imagen-4.0-fast-generate-001`, `imagen-4.0-ultra-generate-001`
  (one image per request); others 404 NOT_FOUND. Body `{"instances": [{"prompt"}],
  "parameters": {...}}` checked field by field: sampleCount 1-4, aspectRatio 1:1 (1024x1024),
  3:4 (896x1280), 4:3 (1280x896), 9:16 (768x1408), 16:9 (1408x768), sampleImageSize 1K/2K
  (2K doubles the sides; not on ultra), personGeneration, safetySetting, outputOptions,
  addWatermark, seed, negativePrompt, enhancePrompt, language, includeRaiReason, ...; an
  unknown field or value is 400 INVALID_ARGUMENT.
- REFUSED_WORD in the prompt: the prompt is blocked, HTTP 400 INVALID_ARGUMENT naming
  Responsible AI. OUTPUT_FLAGGED: every output is filtered, a 200 whose predictions carry
  `raiFilteredReason` (with includeRaiReason) or no predictions at all (without).
  PARTLY_FLAGGED: the last of several outputs is filtered.
- `POST /token` (form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`,
  `assertion=<JWT>`): the assertion is verified as Google does, RS256 against the public key
  of its `iss` (registered by the test in `state.service_accounts`: client_email -> PEM),
  `aud` this endpoint, `scope` cloud-platform, `exp` in the future and at most an hour after
  `iat`; a bad one is 400 `{"error": "invalid_grant", "error_description"}`. The access token
  lives `state.token_seconds` (3599 s by default).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import secrets
import time
from urllib.parse import parse_qs

from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from Crypto.Signature import pkcs1_15
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from tests.emulators.google import Failure, invalid  # the Google RPC error shape, as Gemini's
from tests.emulators.harness import REFUSED_WORD, EmulatorState, fake_image, install

OUTPUT_FLAGGED = "flagged-output"
PARTLY_FLAGGED = "partly-flagged"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
MODELS = ("imagen-4.0-generate-001", "imagen-4.0-fast-generate-001", "imagen-4.0-ultra-generate-001")
SIZES = {"1:1": (1024, 1024), "3:4": (896, 1280), "4:3": (1280, 896), "9:16": (768, 1408), "16:9": (1408, 768)}
PARAMETERS = {"sampleCount", "aspectRatio", "sampleImageSize", "personGeneration", "safetySetting", "outputOptions",
              "addWatermark", "seed", "negativePrompt", "enhancePrompt", "language", "includeRaiReason",
              "includeSafetyAttributes", "storageUri", "guidanceScale"}
PERSON = {"allow_adult", "dont_allow", "allow_all"}
SAFETY = {"block_low_and_above", "block_medium_and_above", "block_only_high", "block_none"}
LANGUAGES = {"auto", "en", "zh", "zh-TW", "hi", "ja", "ko", "pt", "es"}
RAI_REASON = ("Unable to show generated images. All images were filtered out because they violated Vertex AI's usage "
              "guidelines. You will not be charged for blocked images. Support codes: 58061214")
BLOCKED_PROMPT = ("Image generation failed with the following error: The prompt could not be submitted. This prompt "
                  "contains sensitive words that violate Google's Responsible AI practices. Try rephrasing the prompt. "
                  "If you think this was an error, send feedback. Support codes: 42876398")


class GrantError(Exception):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_assertion(assertion: str, keys: dict[str, str], audience: str, now: float) -> str:
    """The `iss` of a valid RS256 assertion, or GrantError."""
    try:
        header_b64, claims_b64, signature_b64 = assertion.split(".")
        header, claims = json.loads(_unb64(header_b64)), json.loads(_unb64(claims_b64))
        signature = _unb64(signature_b64)
    except (ValueError, binascii.Error):
        raise GrantError("Invalid JWT: malformed") from None
    if header.get("alg") != "RS256":
        raise GrantError("Invalid JWT: the algorithm must be RS256")
    issuer = claims.get("iss")
    if issuer not in keys:
        raise GrantError("Invalid grant: account not found")
    try:
        pkcs1_15.new(RSA.import_key(keys[issuer])).verify(SHA256.new(f"{header_b64}.{claims_b64}".encode()), signature)
    except (ValueError, TypeError):
        raise GrantError("Invalid JWT Signature.") from None
    if claims.get("aud") != audience:
        raise GrantError("Invalid JWT: Failed audience check.")
    if claims.get("scope") != SCOPE:
        raise GrantError("Invalid OAuth scope or ID token audience provided.")
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int) or not isinstance(exp, int) or exp <= now or exp - iat > 3600 or iat > now + 300:
        raise GrantError("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.")
    return str(issuer)


def check_parameters(model: str, parameters: object) -> dict:
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise invalid("parameters must be an object")
    for key in parameters:
        if key not in PARAMETERS:
            raise invalid(f'Invalid JSON payload received. Unknown name "{key}" at \'parameters\': Cannot find field.')
    count = parameters.get("sampleCount", 1)
    most = 1 if "ultra" in model else 4
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= most:
        raise invalid(f"sampleCount must be between 1 and {most} for {model}, got {count}")
    if parameters.get("aspectRatio", "1:1") not in SIZES:
        raise invalid(f"Unsupported aspect ratio {parameters['aspectRatio']}. Supported: {', '.join(SIZES)}")
    if "sampleImageSize" in parameters:
        if "ultra" in model or parameters["sampleImageSize"] not in ("1K", "2K"):
            raise invalid(f"sampleImageSize {parameters['sampleImageSize']!r} is not supported for {model}")
    if str(parameters.get("personGeneration", "allow_adult")).lower() not in PERSON:
        raise invalid(f"Invalid personGeneration: {parameters['personGeneration']}")
    if str(parameters.get("safetySetting", "block_medium_and_above")).lower() not in SAFETY:
        raise invalid(f"Invalid safetySetting: {parameters['safetySetting']}")
    if parameters.get("language", "auto") not in LANGUAGES:
        raise invalid(f"Unsupported language: {parameters['language']}")
    for flag in ("addWatermark", "enhancePrompt", "includeRaiReason", "includeSafetyAttributes"):
        if flag in parameters and not isinstance(parameters[flag], bool):
            raise invalid(f"{flag} must be a boolean")
    if "seed" in parameters and (not isinstance(parameters["seed"], int) or not 0 <= parameters["seed"] < 2**31):
        raise invalid("seed must be a 32-bit non-negative integer")
    options = parameters.get("outputOptions") or {}
    if not isinstance(options, dict) or set(options) - {"mimeType", "compressionQuality"}:
        raise invalid("outputOptions takes mimeType and compressionQuality")
    if options.get("mimeType", "image/png") not in ("image/png", "image/jpeg"):
        raise invalid(f"Unsupported output mimeType: {options['mimeType']}")
    return parameters


def create_app(state: EmulatorState) -> FastAPI:
    app = FastAPI()
    state.received = []  # type: ignore[attr-defined]
    state.service_accounts = {}  # type: ignore[attr-defined]
    state.tokens = {}  # type: ignore[attr-defined]  # minted access token -> expiry (epoch seconds)
    state.token_seconds = 3599  # type: ignore[attr-defined]
    state.grants = []  # type: ignore[attr-defined]  # the service accounts that were given a token

    def bearer(request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token if scheme == "Bearer" else ""

    def authorized(request: Request) -> bool:
        if request.url.path == "/token":
            return True  # the assertion is the credential
        token = bearer(request)
        expiry = state.tokens.get(token)  # type: ignore[attr-defined]
        return bool(token) and (token == state.api_key or (expiry is not None and expiry > time.time()))

    @app.exception_handler(Failure)
    async def failure(_request: Request, exc: Failure) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.code)

    @app.post("/token")
    async def token(request: Request) -> JSONResponse:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(), keep_blank_values=True).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return JSONResponse({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}, 400)
        try:
            issuer = verify_assertion(form.get("assertion", ""), state.service_accounts,  # type: ignore[attr-defined]
                                      f"{state.base_url}/token", time.time())
        except GrantError as exc:
            return JSONResponse({"error": "invalid_grant", "error_description": exc.description}, 400)
        minted = "ya29.emulated-" + secrets.token_urlsafe(24)
        state.tokens[minted] = time.time() + state.token_seconds  # type: ignore[attr-defined]
        state.grants.append(issuer)  # type: ignore[attr-defined]
        return JSONResponse({"access_token": minted, "expires_in": state.token_seconds,  # type: ignore[attr-defined]
                             "token_type": "Bearer"})

    @app.post("/v1/projects/{project}/locations/{location}/publishers/google/models/{target}")
    async def predict(project: str, location: str, target: str, request: Request):
        model, _, method = target.partition(":")
        if not authorized(request):
            raise Failure(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 "
                          "access token, login cookie or other valid authentication credential. See "
                          "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                          [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_EXPIRED"
                            if bearer(request) in state.tokens else "CREDENTIALS_MISSING",  # type: ignore[attr-defined]
                            "domain": "googleapis.com", "metadata": {"service": "aiplatform.googleapis.com",
                                                                     "method": "google.cloud.aiplatform.v1.PredictionService.Predict"}}])
        if method != "predict":
            raise Failure(404, "NOT_FOUND", f"Method {method!r} not found")
        if model not in MODELS:
            raise Failure(404, "NOT_FOUND", f"Publisher Model `projects/{project}/locations/{location}/publishers/"
                          f"google/models/{model}` not found.")
        try:
            body = await request.json()
        except ValueError:
            raise invalid("Invalid JSON payload received.") from None
        if not isinstance(body, dict) or set(body) - {"instances", "parameters", "labels"}:
            raise invalid("The request takes instances, parameters and labels")
        instances = body.get("instances")
        if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
            raise invalid("instances must hold exactly one instance")
        prompt = instances[0].get("prompt")
        if not isinstance(prompt, str) or not prompt.strip() or set(instances[0]) != {"prompt"}:
            raise invalid("instances[0].prompt is required (a non-empty string) and the only field")
        parameters = check_parameters(model, body.get("parameters"))
        state.received.append({"project": project, "location": location, "model": model,  # type: ignore[attr-defined]
                               "prompt": prompt, "parameters": parameters})
        lowered = prompt.lower()
        if REFUSED_WORD in lowered:
            raise invalid(BLOCKED_PROMPT)
        count = parameters.get("sampleCount", 1)
        scale = 2 if parameters.get("sampleImageSize") == "2K" else 1
        width, height = SIZES[parameters.get("aspectRatio", "1:1")]
        mime = (parameters.get("outputOptions") or {}).get("mimeType", "image/png")
        fmt = "JPEG" if mime == "image/jpeg" else "PNG"
        deterministic = parameters.get("addWatermark", True) is False and "seed" in parameters
        flagged = count if OUTPUT_FLAGGED in lowered else (1 if PARTLY_FLAGGED in lowered and count > 1 else 0)
        predictions = []
        for index in range(count):
            if index >= count - flagged:
                if parameters.get("includeRaiReason"):
                    predictions.append({"raiFilteredReason": RAI_REASON})
                continue
            salt = f"{parameters['seed']}/{index}" if deterministic else secrets.token_hex(4)
            data = fake_image(width * scale, height * scale, f"{model}/{prompt}/{salt}", fmt)
            Image.open(io.BytesIO(data)).verify()
            predictions.append({"bytesBase64Encoded": base64.b64encode(data).decode(), "mimeType": mime})
        return {"predictions": predictions} if predictions else {}

    return install(app, state, authorized)

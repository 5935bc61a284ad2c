"""Imagen 4 on Vertex AI, through `publishers/google/models/{model}:predict`
(docs/provider-contracts-2.md §14, "Imagen 4 on Vertex AI").

Imagen is deprecated on Vertex AI (listed among its "Discontinued endpoints"; the docs say
to move to gemini-2.5-flash-image before 2026-06-30, and whether Vertex still serves it
after that is unconfirmed) and shut down on the Gemini API: this pool is for projects that
still have it. The model ids are configuration (VERTEX_MODELS) because they may go away.

- `POST {base}/projects/{project}/locations/{location}/publishers/google/models/{model}:predict`,
  `Authorization: Bearer <OAuth access token>`: VERTEX_ACCESS_TOKEN as it is (e.g. from
  `gcloud auth print-access-token`, which expires within the hour), or minted here from a
  service-account key file (VERTEX_SERVICE_ACCOUNT_FILE, `ServiceAccountToken`: an RS256
  JWT bearer grant to the key's `token_uri`, scope cloud-platform, renewed before expiry).
- Body `{"instances": [{"prompt"}], "parameters": {sampleCount, aspectRatio (1:1, 3:4, 4:3,
  9:16, 16:9), sampleImageSize (1K/2K, generate and fast only), personGeneration,
  safetySetting, outputOptions.mimeType, addWatermark, seed, negativePrompt,
  includeRaiReason}}`; the client's `provider_options` (enhancePrompt, language, ...) are
  merged into `parameters` last.
- Answer `predictions[]`, each `{bytesBase64Encoded, mimeType}` or `{raiFilteredReason}`.

Mapping: a blocked prompt (HTTP 400 naming Responsible AI) and filtered outputs (fewer
images than asked: `raiFilteredReason`, or none at all) are content-policy failures, not
retried and refunded as every failure is; 401/403 are PROVIDER_AUTH (a minted token is
renewed once first); 429 RESOURCE_EXHAUSTED and 5xx are retried. The ultra model makes
one image per request, so `n` of them are `n` concurrent requests. `seed` is sent only
with the watermark off (VERTEX_ADD_WATERMARK=false): with SynthID on it is reportedly not
deterministic. Results are delivered at the promised pixel size (`exact_size`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from Crypto.Signature import pkcs1_15
from pydantic import Field, SecretStr, field_validator, model_validator

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from worker.providers.adapter import JobClock, Provider, all_or_first_error
from worker.providers.base import GeneratedImage, Progress, ProviderError, ProviderResult
from worker.providers.images import decode_b64, deliver
from worker.providers.options import provider_options
from worker.providers.settings import UpstreamSettings
from worker.providers.shaping import nearest_ratio, non_empty_prompt, requested_ratio, resolution_tier

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_SECONDS = 3600  # the longest assertion Google's token endpoint takes
RENEW_SECONDS = 300  # a token is replaced this long before it expires
ASPECT_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
MAX_SAMPLES = 4
# Catalog model id -> Vertex model (VERTEX_MODELS adds or replaces entries).
MODELS = {
    "imagen-4": "imagen-4.0-generate-001",
    "imagen-4-fast": "imagen-4.0-fast-generate-001",
    "imagen-4-ultra": "imagen-4.0-ultra-generate-001",
}
# Words of the 400 that refuses a prompt ("The prompt could not be submitted. This prompt
# contains sensitive words that violate Google's Responsible AI practices ...").
PROMPT_REFUSAL_WORDS = ("responsible ai", "could not be submitted", "sensitive words", "violate")


class VertexSettings(UpstreamSettings):
    project: str = Field(validation_alias="VERTEX_PROJECT", min_length=1)
    location: str = Field("us-central1", validation_alias="VERTEX_LOCATION", min_length=1)
    # Empty: https://{location}-aiplatform.googleapis.com/v1 (the emulator's address in tests).
    base_url_override: str = Field("", validation_alias="VERTEX_BASE_URL")
    # One of the two credentials: a bearer token as it is, or a service-account key file.
    access_token: SecretStr = Field(SecretStr(""), validation_alias="VERTEX_ACCESS_TOKEN")
    service_account_file: str = Field("", validation_alias="VERTEX_SERVICE_ACCOUNT_FILE")
    models: dict[str, str] = Field(default_factory=dict, validation_alias="VERTEX_MODELS")
    add_watermark: bool = Field(True, validation_alias="VERTEX_ADD_WATERMARK")
    person_generation: str = Field("allow_adult", validation_alias="VERTEX_PERSON_GENERATION")
    safety_setting: str = Field("block_medium_and_above", validation_alias="VERTEX_SAFETY_SETTING")

    @classmethod
    def configured(cls, environ: Mapping[str, str]) -> bool:
        """A pool needs one of the two credentials as well as the project."""
        return bool(environ.get("VERTEX_ACCESS_TOKEN") or environ.get("VERTEX_SERVICE_ACCOUNT_FILE"))

    @field_validator("service_account_file")
    @classmethod
    def _key_file(cls, path: str) -> str:
        if path:
            read_key_file(path)  # a bad file stops the worker at start-up, naming the variable
        return path

    @model_validator(mode="after")
    def _credential(self) -> VertexSettings:
        if not (self.access_token.get_secret_value() or self.service_account_file):
            raise ValueError("vertex needs VERTEX_ACCESS_TOKEN or VERTEX_SERVICE_ACCOUNT_FILE")
        return self

    @property
    def base_url(self) -> str:
        if self.base_url_override:
            return self.base_url_override
        host = (
            "aiplatform.googleapis.com" if self.location == "global" else f"{self.location}-aiplatform.googleapis.com"
        )
        return f"https://{host}/v1"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_assertion(key: dict[str, str], now: float) -> str:
    """The JWT of Google's bearer grant: RS256 by the service account's private key."""
    header = {"alg": "RS256", "typ": "JWT", "kid": key.get("private_key_id", "")}
    claims = {
        "iss": key["client_email"],
        "scope": SCOPE,
        "aud": key["token_uri"],
        "iat": int(now),
        "exp": int(now) + ASSERTION_SECONDS,
    }
    signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    digest = SHA256.new(signing_input.encode())
    signature = pkcs1_15.new(RSA.import_key(key["private_key"])).sign(digest)
    return f"{signing_input}.{_b64url(signature)}"


def read_key_file(path: str) -> dict[str, str]:
    """The service-account key file's fields this flow needs, or a start-up error naming the file."""
    try:
        key = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable JSON key file ({type(exc).__name__})") from None
    missing = [f for f in ("client_email", "private_key", "token_uri") if not isinstance(key.get(f), str) or not key[f]]
    if key.get("type") != "service_account" or missing:
        raise ValueError(f"{path}: not a service-account key (missing {missing or 'type'})")
    try:
        RSA.import_key(key["private_key"])
    except (ValueError, IndexError, TypeError):
        raise ValueError(f"{path}: its private_key is not an RSA key") from None
    return key


class ServiceAccountToken(httpx.Auth):
    """The bearer token of every call, minted from a service-account key: one cached token
    (concurrent calls wait for the same mint), renewed before it expires and once more when
    Vertex answers 401 (a token revoked or expired early)."""

    def __init__(
        self,
        key: dict[str, str],
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._key = key
        self._clock = clock
        self._timeout = timeout
        self._transport = transport
        self._token = ""
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self, *, stale: str = "") -> str:
        async with self._lock:
            if not self._token or self._clock() >= self._renew_at or self._token == stale:
                await self._mint()
            return self._token

    async def _mint(self) -> None:
        now = self._clock()
        form = {"grant_type": JWT_BEARER, "assertion": signed_assertion(self._key, now)}
        # Transport errors propagate as they are: Upstream retries them like the API's own.
        async with httpx.AsyncClient(timeout=self._timeout, transport=self._transport) as client:
            response = await client.post(self._key["token_uri"], data=form)
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        if response.status_code in (400, 401, 403):
            reason = " ".join(str(body.get("error_description") or body.get("error") or response.status_code).split())
            raise ProviderError(
                ErrorCode.PROVIDER_AUTH,
                f"google's token endpoint refused the service account {self._key['client_email']}: {reason[:200]}",
                retryable=True,
            )
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if not response.is_success or not isinstance(token, str) or not token:
            raise ProviderError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"google's token endpoint failed (HTTP {response.status_code})",
                retryable=True,
            )
        seconds = float(lifetime) if isinstance(lifetime, int | float) else float(ASSERTION_SECONDS)
        self._token = token
        self._renew_at = now + max(0.0, seconds - RENEW_SECONDS)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        used = await self.token()
        request.headers["Authorization"] = f"Bearer {used}"
        response = yield request
        if response.status_code == 401:
            await response.aread()
            request.headers["Authorization"] = f"Bearer {await self.token(stale=used)}"
            yield request


def upstream_model(model: str, models: dict[str, str]) -> str:
    name = {**MODELS, **models}.get(model)
    if name is None:
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"the vertex adapter does not serve the model {model!r}")
    return name


def per_request(name: str) -> int:
    """Images one :predict makes: the ultra model makes one."""
    return 1 if "ultra" in name else MAX_SAMPLES


def takes_image_size(name: str) -> bool:
    """sampleImageSize is documented for generate-001 and fast-generate-001 only."""
    return name.startswith("imagen-4") and "ultra" not in name


def parameters(generation: gen.Generation, name: str, settings: VertexSettings, count: int) -> dict[str, Any]:
    """The `parameters` of one :predict making `count` images."""
    params = generation.params
    wants_2k = resolution_tier(generation) != "1K"  # the catalog's Imagen sizes end at 2K
    out: dict[str, Any] = {
        "sampleCount": count,
        "aspectRatio": nearest_ratio(*requested_ratio(generation), ASPECT_RATIOS),
        "personGeneration": settings.person_generation,
        "safetySetting": settings.safety_setting,
        "addWatermark": settings.add_watermark,
        "includeRaiReason": True,
        "outputOptions": {
            "mimeType": "image/jpeg" if generation.output_format == gen.OUTPUT_FORMAT_JPEG else "image/png"
        },
    }
    if takes_image_size(name):
        out["sampleImageSize"] = "2K" if wants_2k else "1K"
    elif wants_2k:
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} makes 1K images only")
    if not settings.add_watermark:
        out["seed"] = generation.seed % 2**31  # a 32-bit int upstream
    if params.negative_prompt:
        out["negativePrompt"] = params.negative_prompt
    return {**out, **provider_options(generation)}


def images_of(body: object, wanted: int) -> list[bytes]:
    """The images of a :predict answer, or the classified reason there are fewer than asked."""
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if predictions is not None and not isinstance(predictions, list):
        raise ProviderError(ErrorCode.PROVIDER_ERROR, "vertex answered predictions that are not a list")
    images, reasons = [], []
    for item in predictions or []:
        if isinstance(item, dict) and item.get("bytesBase64Encoded"):
            images.append(decode_b64(str(item["bytesBase64Encoded"]), "vertex"))
        elif isinstance(item, dict) and item.get("raiFilteredReason"):
            reasons.append(" ".join(str(item["raiFilteredReason"]).split())[:200])
    if len(images) >= wanted:
        return images[:wanted]
    why = f": {reasons[0]}" if reasons else " (no raiFilteredReason given)"
    raise ProviderError(
        ErrorCode.CONTENT_POLICY_VIOLATION, f"vertex filtered {wanted - len(images)} of {wanted} images{why}"
    )


def classify(response: httpx.Response) -> ProviderError | None:
    """A prompt refused by Responsible AI is a 400; a bad token 401 UNAUTHENTICATED."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict):
        return None
    message = " ".join(str(error.get("message") or "").split())[:300]
    if response.status_code == 400 and any(w in message.lower() for w in PROMPT_REFUSAL_WORDS):
        return ProviderError(ErrorCode.CONTENT_POLICY_VIOLATION, f"vertex refused the prompt: {message}")
    if response.status_code in (401, 403):
        return ProviderError(
            ErrorCode.PROVIDER_AUTH,
            f"vertex refused the gateway's credentials ({error.get('status') or response.status_code}): {message}; "
            "the operator must check the token or service account and its project",
            retryable=True,
        )
    return None


class VertexProvider(Provider):
    name = "vertex"
    settings_type = VertexSettings
    settings: VertexSettings

    @staticmethod
    def headers(settings: VertexSettings) -> dict[str, str]:
        if settings.service_account_file:
            return {}
        return {"Authorization": f"Bearer {settings.access_token.get_secret_value()}"}

    @staticmethod
    def auth(settings: VertexSettings) -> httpx.Auth | None:
        if not settings.service_account_file:
            return None
        return ServiceAccountToken(read_key_file(settings.service_account_file), settings.request_timeout_seconds)

    @staticmethod
    def secret(settings: VertexSettings) -> str:
        return settings.access_token.get_secret_value()

    classify = staticmethod(classify)

    async def run(self, generation: gen.Generation, progress: Progress, clock: JobClock) -> ProviderResult:
        name = upstream_model(generation.model, self.settings.models)
        kind = generation.params.kind or gen.GENERATION_KIND_GENERATE
        if kind != gen.GENERATION_KIND_GENERATE or generation.params.input_images or generation.params.image_url:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} makes images from a prompt only")
        prompt = non_empty_prompt(generation, "vertex")
        path = (
            f"/projects/{self.settings.project}/locations/{self.settings.location}"
            f"/publishers/google/models/{name}:predict"
        )
        n = generation.params.n or 1
        step = per_request(name)
        counts = [min(step, n - start) for start in range(0, n, step)]
        done: list[int] = []

        async def call(count: int) -> list[GeneratedImage]:
            body = {"instances": [{"prompt": prompt}], "parameters": parameters(generation, name, self.settings, count)}
            response = await self.http.request("POST", path, json=body)
            try:
                answer = response.json()
            except ValueError:
                answer = None
            made = [await deliver(data, generation, self.name, exact_size=True) for data in images_of(answer, count)]
            done.append(count)
            await progress(100.0 * sum(done) / n)
            return made

        batches = await all_or_first_error([call(count) for count in counts])
        images = [image for batch in batches for image in batch]
        return ProviderResult(images)

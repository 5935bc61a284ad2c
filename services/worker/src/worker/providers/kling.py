"""Kling AI images and Kolors virtual try-on (docs/provider-contracts-2.md section 8).

`POST /v1/images/generations` (text-to-image, image-to-image with a `subject` or `face`
reference) or `POST /v1/images/kolors-virtual-try-on` (a person and a garment), then
`GET .../{task_id}` until `succeed` or `failed`; one task makes all `n` images. Every call
carries `Authorization: Bearer <JWT>`, an HS256 token signed here from the access and
secret keys (`KlingToken`), renewed before it expires and re-signed once when Kling calls
it expired or not yet valid (codes 1004, 1003). Kling's envelope `{code, message,
request_id, data}` carries the reason of every failure: HTTP 429 is billing (1100-1102,
never retried) as well as back-pressure (1302, 1303). Inputs are read and checked here
(jpg/png, 10 MB, sides >= 300 px) and sent as base64 without a `data:` prefix.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import httpx
from pydantic import Field, SecretStr

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from svckit.logging import get_logger
from worker.providers.base import ProviderError, ProviderResult
from worker.providers.images import deliver
from worker.providers.input_images import InputFile, as_png, images_of
from worker.providers.options import provider_options
from worker.providers.polling import Poll, PollingProvider, Task
from worker.providers.settings import UpstreamSettings
from worker.providers.shaping import nearest_ratio, requested_ratio

log = get_logger(__name__)

TOKEN_SECONDS = 1800  # the docs' sample lifetime (the longest accepted is unconfirmed)
RENEW_SECONDS = 300  # a token is replaced this long before it expires
NOT_BEFORE_SKEW = 5  # `nbf` back-dated: a token "not yet valid" fails with 1003
RATIOS = ["16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9"]
MAX_INPUT_BYTES = 10 * 1024 * 1024
MIN_INPUT_SIDE = 300
WIDEST_INPUT = Fraction(5, 2)
MAX_PROMPT = 2500
GENERATIONS = "/v1/images/generations"
TRY_ON = "/v1/images/kolors-virtual-try-on"
# The roles of the inputs: an image-to-image reference ("image" is a subject reference on
# kling-v1-5, which requires one), and the try-on's person and garment.
REFERENCES = ("subject", "face")
TRY_ON_ROLES = ("person", "garment")
PENDING = ("submitted", "processing")
# Codes of Kling's envelope (contract's error table).
RESIGN = {1003, 1004}
BILLING = {1100, 1101, 1102}
FORBIDDEN = {1103, 1304}
CONTENT_POLICY = {1300, 1301}
INVALID = {1200, 1201}
UNKNOWN_RESOURCE = {1202, 1203}
# task_status_msg of a refused task (its wording is unconfirmed): any of these words.
REFUSAL_WORDS = ("risk", "security", "sensitive", "policy", "inappropriate", "content")


class KlingSettings(UpstreamSettings):
    access_key: SecretStr = Field(validation_alias="KLING_ACCESS_KEY", min_length=1)
    secret_key: SecretStr = Field(validation_alias="KLING_SECRET_KEY", min_length=1)
    base_url: str = Field("https://api-singapore.klingai.com", validation_alias="KLING_BASE_URL")


@dataclass(frozen=True)
class KlingModel:
    references: tuple[str, ...] = ()  # image_reference values it takes ("" = a whole-image reference)
    fidelity: bool = False  # image_fidelity
    human_fidelity: bool = False
    ratios: tuple[str, ...] = tuple(RATIOS)
    try_on: bool = False
    text_to_image: bool = True  # kling-v2-new only restyles an input image


# Catalog model id -> what Kling's model takes (the contract's capability map).
MODELS: dict[str, KlingModel] = {
    "kling-v1": KlingModel(references=("",), fidelity=True, ratios=tuple(r for r in RATIOS if r != "21:9")),
    "kling-v1-5": KlingModel(references=REFERENCES, fidelity=True, human_fidelity=True),
    "kling-v2": KlingModel(references=("",)),
    "kling-v2-new": KlingModel(references=("",), text_to_image=False),
    "kling-v2-1": KlingModel(references=("",)),
    "kolors-virtual-try-on-v1": KlingModel(try_on=True),
    "kolors-virtual-try-on-v1-5": KlingModel(try_on=True),
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_token(access_key: str, secret_key: str, now: float) -> str:
    """Kling's JWT: HS256, `{"iss": access key, "exp": now + 30 min, "nbf": now - 5 s}`."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"iss": access_key, "exp": int(now) + TOKEN_SECONDS, "nbf": int(now) - NOT_BEFORE_SKEW}
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret_key.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def envelope_code(response: httpx.Response) -> int | None:
    """The `code` of Kling's envelope, None when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


class KlingToken(httpx.Auth):
    """The bearer JWT of every call to Kling: one cached token, renewed before it expires,
    re-signed once when Kling answers 1003 (not yet valid) or 1004 (expired)."""

    requires_response_body = True

    def __init__(self, access_key: str, secret_key: str, clock: Callable[[], float] = time.time) -> None:
        self._access = access_key
        self._secret = secret_key
        self._clock = clock
        self._token = ""
        self._renew_at = 0.0

    def token(self, *, fresh: bool = False) -> str:
        now = self._clock()
        if fresh or not self._token or now >= self._renew_at:
            self._token = sign_token(self._access, self._secret, now)
            self._renew_at = now + TOKEN_SECONDS - RENEW_SECONDS
        return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        response = yield request
        if response.status_code == 401 and envelope_code(response) in RESIGN:
            request.headers["Authorization"] = f"Bearer {self.token(fresh=True)}"
            yield request


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = {}
    text = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(text or response.text or f"HTTP {response.status_code}").split())[:300]


def refusal_of(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in REFUSAL_WORDS)


class KlingProvider(PollingProvider):
    name = "kling"
    settings_type = KlingSettings
    settings: KlingSettings

    @staticmethod
    def secret(settings: KlingSettings) -> str:
        return settings.secret_key.get_secret_value()

    @staticmethod
    def auth(settings: KlingSettings) -> httpx.Auth:
        """Kling's keys sign a JWT per `KlingToken`; the secret key itself never leaves."""
        return KlingToken(settings.access_key.get_secret_value(), settings.secret_key.get_secret_value())

    @staticmethod
    def classify(response: httpx.Response) -> ProviderError | None:
        code = envelope_code(response)
        if code is None:
            return None
        detail = f"{_message(response)} (code {code})"
        if code in BILLING:
            return ProviderError(
                ErrorCode.PROVIDER_AUTH, f"kling refused the gateway's account: {detail}", retryable=True
            )
        if code in FORBIDDEN or 1000 <= code <= 1004:
            return ProviderError(
                ErrorCode.PROVIDER_AUTH,
                f"kling refused the gateway's credentials: {detail}; the operator must check its keys",
                retryable=True,
            )
        if code in CONTENT_POLICY:
            return ProviderError(ErrorCode.CONTENT_POLICY_VIOLATION, f"kling's content policy refused it: {detail}")
        if code in INVALID:
            return ProviderError(ErrorCode.INVALID_REQUEST, f"kling rejected the request: {detail}")
        if code in UNKNOWN_RESOURCE:
            return ProviderError(ErrorCode.PROVIDER_ERROR, f"kling does not know it: {detail}", retryable=True)
        return None  # 1302/1303 (back off) and 5000-5002 (retry later): the generic reading of 429 and 5xx

    async def requests(self, generation: gen.Generation) -> list[tuple[str, dict]]:
        model = MODELS.get(generation.model)
        if model is None:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, f"kling does not serve {generation.model}", retryable=True)
        if model.try_on:
            return [(TRY_ON, await self._try_on_body(generation))]
        return [(GENERATIONS, await self._generation_body(generation, model))]

    async def _input(self, ref: gen.InputImage, what: str) -> tuple[InputFile, str]:
        """The input, checked against Kling's limits, and its base64 (no data: prefix)."""
        item = await self.inputs.read(ref)
        if item.image_format not in ("PNG", "JPEG"):
            item = await as_png(item)
        if len(item.data) > MAX_INPUT_BYTES:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"the {what} is larger than 10 MB, the most kling takes")
        if min(item.width, item.height) < MIN_INPUT_SIDE:
            raise ProviderError(
                ErrorCode.INVALID_REQUEST,
                f"the {what} is {item.width}x{item.height}; kling needs both sides of at least {MIN_INPUT_SIDE} px",
            )
        return item, base64.b64encode(item.data).decode()

    async def _generation_body(self, generation: gen.Generation, model: KlingModel) -> dict:
        params = generation.params
        inputs = [i for role in ("image", *REFERENCES) for i in images_of(generation, role)]
        if len(inputs) > 1:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes one reference image")
        prompt = params.prompt.strip()
        if not prompt:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "kling needs a prompt")
        if len(prompt) > MAX_PROMPT or len(params.negative_prompt) > MAX_PROMPT:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"kling takes prompts of at most {MAX_PROMPT} characters")
        body: dict[str, Any] = {"model_name": generation.model, "prompt": prompt, "n": params.n or 1}
        width, height = requested_ratio(generation)
        if inputs:
            ref = inputs[0]
            item, body["image"] = await self._input(ref, "input image")
            if not 1 / WIDEST_INPUT <= Fraction(item.width, item.height) <= WIDEST_INPUT:
                raise ProviderError(
                    ErrorCode.INVALID_REQUEST, "kling takes input images of aspect ratio 1:2.5 to 2.5:1"
                )
            if params.size == "auto":
                width, height = item.width, item.height
            if params.negative_prompt:
                raise ProviderError(ErrorCode.INVALID_REQUEST, "kling takes no negative_prompt with an input image")
            reference = self._reference(generation, model, ref.role or "image")
            if reference:
                body["image_reference"] = reference
            if params.HasField("image_fidelity"):
                if not model.fidelity:
                    raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes no image_fidelity")
                body["image_fidelity"] = round(params.image_fidelity, 3)
            if params.HasField("human_fidelity"):
                if not (model.human_fidelity and reference == "subject"):
                    raise ProviderError(
                        ErrorCode.INVALID_REQUEST, "human_fidelity needs kling-v1-5 with a subject reference"
                    )
                body["human_fidelity"] = round(params.human_fidelity, 3)
        elif not model.text_to_image:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} restyles an input image; send one")
        elif params.HasField("image_fidelity") or params.HasField("human_fidelity"):
            raise ProviderError(ErrorCode.INVALID_REQUEST, "image_fidelity and human_fidelity need an input image")
        elif params.negative_prompt:
            body["negative_prompt"] = params.negative_prompt
        body["aspect_ratio"] = nearest_ratio(width, height, model.ratios)
        options = provider_options(generation)  # resolution: "2k" (kling-v2 text-to-image)
        if inputs and options.get("resolution") == "2k":
            raise ProviderError(ErrorCode.INVALID_REQUEST, "kling makes 2k images from text only, not from an image")
        body.update(options)
        return body

    @staticmethod
    def _reference(generation: gen.Generation, model: KlingModel, role: str) -> str:
        """image_reference of the input: its role; a plain image is a whole-image reference
        where the model has one, else (kling-v1-5, which requires one) a subject reference."""
        if role in REFERENCES:
            if role not in model.references:
                raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes no image_reference {role!r}")
            return role
        return "" if "" in model.references else "subject"

    async def _try_on_body(self, generation: gen.Generation) -> dict:
        body: dict[str, Any] = {"model_name": generation.model}
        for role, field in zip(TRY_ON_ROLES, ("human_image", "cloth_image"), strict=True):
            found = images_of(generation, role)
            if len(found) != 1:
                raise ProviderError(
                    ErrorCode.INVALID_REQUEST, f"kolors virtual try-on takes one {role} image; got {len(found)}"
                )
            _item, body[field] = await self._input(found[0], f"{role} image")
        return body

    async def submit(self, request: tuple[str, dict]) -> Task:
        path, body = request
        data = (await self.http.request("POST", path, json=body)).json().get("data") or {}
        task_id = data.get("task_id") if isinstance(data, dict) else None
        if not task_id:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "kling accepted the task without a task_id", retryable=True)
        return Task(str(task_id), {"path": f"{path}/{task_id}"})

    async def poll(self, task: Task) -> Poll:
        data = (await self.http.request("GET", task.state["path"])).json().get("data") or {}
        status = data.get("task_status")
        if status == "succeed":
            task.state["result"] = data
            return Poll(done=True)
        if status == "failed":
            message = " ".join(str(data.get("task_status_msg") or "no reason given").split())[:300]
            if refusal_of(message):
                raise ProviderError(ErrorCode.CONTENT_POLICY_VIOLATION, f"kling refused the task: {message}")
            raise ProviderError(ErrorCode.PROVIDER_ERROR, f"kling failed the task: {message}", retryable=True)
        if status not in PENDING and not task.state.get("warned"):
            task.state["warned"] = True  # a state newer than the contract: keep polling until the timeout
            log.warning("unknown kling task status", status=str(status)[:40], task_id=task.id)
        return Poll()

    async def fetch(self, task: Task) -> list[bytes]:
        images = (task.state["result"].get("task_result") or {}).get("images") or []
        ordered = sorted((i for i in images if isinstance(i, dict) and i.get("url")), key=lambda i: i.get("index") or 0)
        return [await self.http.download(i["url"], self.settings.download_max_bytes) for i in ordered]

    async def collect(self, generation: gen.Generation, outputs: list[list[bytes]]) -> ProviderResult:
        wanted = 1 if MODELS[generation.model].try_on else generation.params.n or 1
        made = outputs[0]
        if len(made) < wanted:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, f"kling returned {len(made)} of {wanted} images", retryable=True
            )
        return ProviderResult([await deliver(data, generation, self.name) for data in made[:wanted]])

"""Replicate predictions: official models at POST /v1/models/{owner}/{name}/predictions,
community models (SDXL) at POST /v1/predictions with a version; `Prefer: wait=N` lets a
fast model answer in the create call, otherwise `urls.get` is polled until succeeded,
failed or canceled. Outputs live on replicate.delivery for an hour: downloaded at once.
Cancel: POST /v1/predictions/{id}/cancel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
from pydantic import Field, SecretStr

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit import formats
from svckit.errors import ErrorCode
from worker.providers.adapter import Context
from worker.providers.base import ProviderError, ProviderResult
from worker.providers.detail import response_detail
from worker.providers.images import deliver
from worker.providers.input_images import images_of
from worker.providers.options import provider_options
from worker.providers.polling import POLL_CONNECTIONS, Poll, PollingProvider, Task, percent_of
from worker.providers.settings import UpstreamSettings
from worker.providers.shaping import fit, nearest_ratio

FLUX_RATIOS = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]
KONTEXT_RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "4:5", "5:4", "21:9", "9:21", "2:1", "1:2"]
TERMINAL = {"succeeded", "failed", "canceled"}
# Model-level refusals arrive as a failed prediction; the wording is the model's.
_REFUSAL = re.compile(r"nsfw|sensitive|\bE005\b|safety|content policy|flagged", re.I)


class ReplicateSettings(UpstreamSettings):
    api_key: SecretStr = Field(validation_alias="REPLICATE_API_TOKEN", min_length=1)
    base_url: str = Field("https://api.replicate.com/v1", validation_alias="REPLICATE_BASE_URL")
    # Prefer: wait=N on create (1-60 s); 0 sends no Prefer header (pure polling).
    prefer_wait_seconds: int = Field(30, validation_alias="REPLICATE_PREFER_WAIT_SECONDS", ge=0, le=60)
    # stability-ai/sdxl is a community model: addressed by version.
    sdxl_version: str = Field(
        "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc", validation_alias="REPLICATE_SDXL_VERSION"
    )


@dataclass(frozen=True)
class ReplicateModel:
    name: str  # owner/name
    # "custom": aspect_ratio=custom + width/height (256-1440, /32); "ratio": one of `ratios`;
    # "pixels": width/height as asked.
    sizing: str
    ratios: tuple[str, ...] = ()
    multi: bool = False  # num_outputs: n images in one prediction
    formats: tuple[str, ...] = ("webp", "jpg", "png")
    image_input: str = ""  # the input's name for the image to edit
    negative_prompt: bool = False
    community: bool = False  # POST /v1/predictions with a version


MODELS: dict[str, ReplicateModel] = {
    "flux-1.1-pro": ReplicateModel("black-forest-labs/flux-1.1-pro", "custom"),
    "flux-pro": ReplicateModel("black-forest-labs/flux-pro", "custom"),
    "flux-dev": ReplicateModel("black-forest-labs/flux-dev", "ratio", tuple(FLUX_RATIOS), multi=True),
    "flux-kontext-pro": ReplicateModel(
        "black-forest-labs/flux-kontext-pro",
        "ratio",
        tuple(KONTEXT_RATIOS),
        formats=("jpg", "png"),
        image_input="input_image",
    ),
    "stable-diffusion-xl": ReplicateModel(
        "stability-ai/sdxl", "pixels", multi=True, formats=("png",), negative_prompt=True, community=True
    ),
}


def model_input(generation: gen.Generation, model: ReplicateModel, image: str = "") -> dict:
    """The prediction's `input` for the whole generation (n images where the model can)."""
    params = generation.params
    kind = params.kind or gen.GENERATION_KIND_GENERATE
    if kind not in (gen.GENERATION_KIND_GENERATE, gen.GENERATION_KIND_EDIT):
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"replicate cannot do {gen.GenerationKind.Name(kind)}")
    if kind == gen.GENERATION_KIND_EDIT and not (model.image_input and image):
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} on replicate edits no images")
    if params.negative_prompt and not model.negative_prompt:
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} on replicate takes no negative_prompt")
    wants = {"jpeg": "jpg"}.get(formats.of(generation.output_format).name, formats.of(generation.output_format).name)
    body: dict = {
        "prompt": params.prompt,
        "seed": generation.seed,
        "output_format": wants if wants in model.formats else "png",
    }
    if model.community:
        del body["output_format"]  # SDXL makes png only
    if model.sizing == "custom":
        body["aspect_ratio"] = "custom"
        body["width"], body["height"] = fit(generation.width, generation.height, lo=256, hi=1440, step=32)
    elif model.sizing == "ratio":
        body["aspect_ratio"] = nearest_ratio(generation.width, generation.height, model.ratios)
    else:
        body["width"], body["height"] = generation.width, generation.height
    if model.multi:
        body["num_outputs"] = params.n or 1
    if params.negative_prompt:
        body["negative_prompt"] = params.negative_prompt
    body.update(provider_options(generation))
    if image:
        body[model.image_input] = image
        # 2 is the most Replicate allows with an input image (and its default).
        body["safety_tolerance"] = min(body.get("safety_tolerance", 2), 2)
    return body


def outputs_of(prediction: dict) -> list[str]:
    """`output` is one URL or a list of them, depending on the model."""
    output = prediction.get("output")
    if isinstance(output, str):
        return [output]
    if isinstance(output, list):
        return [o for o in output if isinstance(o, str)]
    return []


def failure_of(prediction: dict) -> ProviderError:
    error = " ".join(str(prediction.get("error") or "").split())[:300]
    if prediction.get("status") == "canceled":
        return ProviderError(ErrorCode.PROVIDER_ERROR, "the prediction was canceled on replicate", retryable=True)
    if _REFUSAL.search(error):
        return ProviderError(ErrorCode.CONTENT_POLICY_VIOLATION, f"replicate's model refused: {error}")
    return ProviderError(
        ErrorCode.PROVIDER_ERROR, f"replicate's prediction failed: {error or 'no reason given'}", retryable=True
    )


class ReplicateProvider(PollingProvider):
    name = "replicate"
    settings_type = ReplicateSettings
    settings: ReplicateSettings

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self._host = httpx.URL(self.settings.base_url).host

    @classmethod
    def limits(cls, settings: ReplicateSettings) -> tuple[float, int]:
        # Prefer: wait holds a connection (and the request) for the whole wait.
        wait = settings.prefer_wait_seconds
        return max(settings.request_timeout_seconds, wait + 15), 64 if wait else POLL_CONNECTIONS

    @staticmethod
    def headers(settings: ReplicateSettings) -> dict[str, str]:
        return {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}

    @staticmethod
    def classify(response: httpx.Response) -> ProviderError | None:
        status = response.status_code
        if status == 422 and response_detail(response).startswith("The specified version"):
            return ProviderError(
                ErrorCode.PROVIDER_ERROR, "replicate does not know REPLICATE_SDXL_VERSION", retryable=True
            )
        if status == 422:  # RFC 7807: {"title": "Input validation failed", "detail": "- input.width: ..."}
            return ProviderError(
                ErrorCode.INVALID_REQUEST, f"replicate rejected the input: {response_detail(response)}"
            )
        if status == 404 and "/cancel" not in response.request.url.path:
            return ProviderError(
                ErrorCode.PROVIDER_ERROR,
                f"replicate does not know this model or prediction: {response_detail(response)}",
                retryable=True,
            )
        return None

    async def requests(self, generation: gen.Generation) -> list[tuple[ReplicateModel, dict]]:
        model = MODELS.get(generation.model)
        if model is None:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, f"replicate does not serve {generation.model}", retryable=True
            )
        inputs = images_of(generation) if model.image_input else []
        if len(inputs) > 1:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes one input image")
        body = model_input(generation, model, await self.inputs.url_or_data_url(inputs[0]) if inputs else "")
        runs = 1 if model.multi else generation.params.n or 1
        return [(model, {**body, "seed": (generation.seed + i) % 2**32}) for i in range(runs)]

    async def submit(self, request: tuple[ReplicateModel, dict]) -> Task:
        model, body = request
        wait = self.settings.prefer_wait_seconds
        headers = {"Prefer": f"wait={wait}"} if wait else {}
        if model.community:
            path, payload = "/predictions", {"version": self.settings.sdxl_version, "input": body}
        else:
            path, payload = f"/models/{model.name}/predictions", {"input": body}
        prediction = (await self.http.request("POST", path, json=payload, headers=headers)).json()
        prediction_id = prediction.get("id")
        if not prediction_id:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, "replicate created a prediction without an id", retryable=True
            )
        get_url = (prediction.get("urls") or {}).get("get") or f"/predictions/{prediction_id}"
        if httpx.URL(get_url).host not in ("", self._host):
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, "replicate returned a prediction URL on a foreign host", retryable=True
            )
        task = Task(prediction_id, {"get_url": get_url})
        task.last = self._read(task, prediction)
        return task

    async def poll(self, task: Task) -> Poll:
        return self._read(task, (await self.http.request("GET", task.state["get_url"])).json())

    @staticmethod
    def _read(task: Task, prediction: dict) -> Poll:
        task.state["prediction"] = prediction
        if prediction.get("status") in TERMINAL:
            return Poll(done=True)
        return Poll(percent=percent_of(prediction.get("logs")))

    async def fetch(self, task: Task) -> list[str]:
        prediction = task.state["prediction"]
        if prediction["status"] != "succeeded":
            raise failure_of(prediction)
        urls = outputs_of(prediction)
        if not urls:
            removed = " (its data was already removed)" if prediction.get("data_removed") else ""
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, f"replicate's prediction succeeded without output{removed}", retryable=True
            )
        return urls

    async def collect(self, generation: gen.Generation, outputs: list[list[str]]) -> ProviderResult:
        n = generation.params.n or 1
        urls = [url for batch in outputs for url in batch]
        if len(urls) < n:
            raise ProviderError(
                ErrorCode.CONTENT_POLICY_VIOLATION, f"replicate's safety checker withheld {n - len(urls)} of {n} images"
            )
        images = []
        for url in urls[:n]:
            data = await self.http.download(url, self.settings.download_max_bytes)
            images.append(await deliver(data, generation, self.name, exact_size=True))
        return ProviderResult(images)

    async def cancel(self, upstream_id: str) -> None:
        for prediction_id in filter(None, upstream_id.split(",")):
            await self.http.request("POST", f"/predictions/{prediction_id}/cancel")

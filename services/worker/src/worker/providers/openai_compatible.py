"""Any server with an OpenAI-shaped images API (docs/provider-contracts-2.md §13c): vLLM-Omni,
SGLang diffusion, stable-diffusion.cpp's `sd-server`, LocalAI.

`OPENAI_COMPATIBLE_BASE_URL` is the server with its base path (`http://gpu-1:8000/v1`;
`POST <base>/images/generations` is called). `OPENAI_COMPATIBLE_MODELS` (JSON) says, per
catalog model, the upstream `model` name (null: not sent, for one-model servers), the
`flavor` of the server and the `extra` fields passed through unchanged (num_inference_steps,
guidance_scale, true_cfg_scale, ...):

    {"flux-dev-selfhosted": {"model": "black-forest-labs/FLUX.1-dev", "flavor": "fields",
                             "extra": {"num_inference_steps": 28, "guidance_scale": 3.5}}}

- `fields` (vLLM-Omni, SGLang): `seed` and `negative_prompt` as top-level fields, extras beside them;
- `sdcpp` (sd-server): only prompt, n, size at the top; seed, negative prompt and the extras go
  inside the prompt as `<sd_cpp_extra_args>{json}</sd_cpp_extra_args>`;
- `localai`: the negative prompt after `|` in the prompt; no seed (LocalAI takes it from
  the model's config, so a negative prompt is all it gets), extras top-level (e.g. `step`).

Always `response_format: b64_json` (LocalAI defaults to URLs, SGLang refuses them; a URL
answered anyway is downloaded at once); the seed is always sent where the flavor has
one (SGLang's default seed repeats every image). Errors are read from FastAPI's
`{"detail": ...}` (a string or a validation list), `{"error": ...}` and `{"message": ...}`.
These servers have no moderation and no cancel; one call runs the whole generation, so a
call may take as long as the job (WORKER_JOB_TIMEOUT_SECONDS).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from worker.providers.adapter import JobClock, Provider
from worker.providers.base import Progress, ProviderError, ProviderResult
from worker.providers.detail import response_detail
from worker.providers.images import decode_b64, deliver
from worker.providers.openai import size_of
from worker.providers.options import provider_options
from worker.providers.settings import UpstreamSettings
from worker.providers.shaping import non_empty_prompt

SDCPP_TAG = "<sd_cpp_extra_args>{}</sd_cpp_extra_args>"


class ServedModel(BaseModel):
    """How one catalog model is asked of the server."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str | None = None
    flavor: Literal["fields", "sdcpp", "localai"] = "fields"
    extra: dict[str, Any] = {}


class OpenAICompatibleSettings(UpstreamSettings):
    base_url: str = Field(validation_alias="OPENAI_COMPATIBLE_BASE_URL", min_length=1)
    api_key: SecretStr = Field(SecretStr(""), validation_alias="OPENAI_COMPATIBLE_API_KEY")
    # Catalog model id -> how it is asked of the server (JSON object).
    models: dict[str, ServedModel] = Field(validation_alias="OPENAI_COMPATIBLE_MODELS", min_length=1)


def request_body(generation: gen.Generation, served: ServedModel) -> dict:
    """The JSON of POST /images/generations for one generation on this server."""
    p = generation.params
    kind = p.kind or gen.GENERATION_KIND_GENERATE
    if kind != gen.GENERATION_KIND_GENERATE or p.input_images or p.image_url:
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} makes images from text only")
    size = size_of(generation)
    prompt = non_empty_prompt(generation, "the image server")
    body: dict[str, Any] = {"prompt": prompt, "n": p.n or 1, "size": size if size != "auto" else "1024x1024"}
    if served.model:
        body["model"] = served.model
    body["response_format"] = "b64_json"
    if served.flavor == "fields":
        body["seed"] = generation.seed
        if p.negative_prompt:
            body["negative_prompt"] = p.negative_prompt
        body.update(served.extra)
        body.update(provider_options(generation))
    elif served.flavor == "sdcpp":
        args: dict[str, Any] = {"seed": generation.seed, **served.extra, **provider_options(generation)}
        if p.negative_prompt:
            args["negative_prompt"] = p.negative_prompt
        body["prompt"] = prompt + SDCPP_TAG.format(json.dumps(args, separators=(",", ":")))
    else:  # localai
        if "|" in prompt:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes no '|' in the prompt")
        if p.negative_prompt:
            body["prompt"] = f"{prompt}|{p.negative_prompt}"
        body.update(served.extra)
        body.update(provider_options(generation))
    return body


class OpenAICompatibleProvider(Provider):
    name = "openai_compatible"
    settings_type = OpenAICompatibleSettings
    settings: OpenAICompatibleSettings

    @staticmethod
    def headers(settings: OpenAICompatibleSettings) -> dict[str, str]:
        key = settings.api_key.get_secret_value()
        return {"Authorization": f"Bearer {key}"} if key else {}

    @classmethod
    def limits(cls, settings: OpenAICompatibleSettings) -> tuple[float, int]:
        """The call is the whole generation: it may take the job's time, not one request's."""
        return max(settings.request_timeout_seconds, settings.job_timeout_seconds), cls.max_connections

    @staticmethod
    def classify(response: httpx.Response) -> ProviderError | None:
        if response.status_code in (400, 422):  # FastAPI detail: a string or a validation list
            return ProviderError(
                ErrorCode.INVALID_REQUEST, f"the image server rejected the request: {response_detail(response)}"
            )
        return None

    async def run(self, generation: gen.Generation, progress: Progress, clock: JobClock) -> ProviderResult:
        served = self.settings.models.get(generation.model)
        if served is None:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, f"{self.name} is not configured to serve {generation.model}", retryable=True
            )
        response = await self.http.request("POST", "/images/generations", json=request_body(generation, served))
        try:
            body = response.json()
        except ValueError:
            body = None
        items = body.get("data") if isinstance(body, dict) else None
        wanted = generation.params.n or 1
        if not isinstance(items, list) or len(items) < wanted:
            got = len(items) if isinstance(items, list) else 0
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, f"{self.name} returned {got} of {wanted} images", retryable=True
            )
        images = []
        for index, item in enumerate(items[:wanted]):
            images.append(await deliver(await self._bytes_of(item), generation, self.name, exact_size=True))
            await progress(100.0 * (index + 1) / wanted)
        return ProviderResult(images)

    async def _bytes_of(self, item: object) -> bytes:
        if isinstance(item, dict) and item.get("b64_json"):
            return decode_b64(str(item["b64_json"]), self.name)
        if isinstance(item, dict) and isinstance(item.get("url"), str) and item["url"]:
            url = str(self.http.client.base_url.join(item["url"]))  # LocalAI's URLs may be relative
            return await self.http.download(url, self.settings.download_max_bytes)
        raise ProviderError(ErrorCode.PROVIDER_ERROR, f"{self.name} returned an image with neither b64_json nor url")

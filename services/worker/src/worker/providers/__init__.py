"""Provider adapters: one per upstream API, behind one interface (`Provider`, providers.adapter).

`WORKER_PROVIDER` picks the adapter; each is imported only when chosen, and builds itself
from the environment and the worker's storage and status clients (`Provider.from_env`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from pixelmesh.status.v1 import status_service_pb2_grpc
from pixelmesh.storage.v1 import storage_service_pb2_grpc
from worker.providers.adapter import Provider
from worker.providers.base import GeneratedImage, Progress, ProviderError, ProviderResult

# name -> "module:class"
PROVIDERS: dict[str, str] = {
    "local": "worker.providers.local:LocalProvider",
    "openai": "worker.providers.openai:OpenAIProvider",
    "stability": "worker.providers.stability:StabilityProvider",
    "ideogram": "worker.providers.ideogram:IdeogramProvider",
    "google": "worker.providers.google:GoogleProvider",
    "bfl": "worker.providers.bfl:BflProvider",
    "midjourney": "worker.providers.midjourney:MidjourneyProvider",
    "replicate": "worker.providers.replicate:ReplicateProvider",
    "fal": "worker.providers.fal:FalProvider",
    "comfyui": "worker.providers.comfyui:ComfyUIProvider",
    "openai_compatible": "worker.providers.openai_compatible:OpenAICompatibleProvider",
    "sdapi": "worker.providers.sdapi:SdapiProvider",
    "kling": "worker.providers.kling:KlingProvider",
    "vertex": "worker.providers.vertex:VertexProvider",
}


def adapter_class(name: str) -> type[Provider]:
    module, _, cls = PROVIDERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def configured(environ: Mapping[str, str]) -> list[str]:
    """The providers whose adapter finds every variable its settings require in `environ`
    (`make up` starts a pool for each: OPENAI_API_KEY set means an openai worker), and
    whose settings' `configured(environ)` agrees (vertex: one of its two credentials)."""
    names = []
    for name in PROVIDERS:
        settings = adapter_class(name).settings_type
        required = [f.validation_alias or n for n, f in settings.model_fields.items() if f.is_required()]
        if all(environ.get(str(variable)) for variable in required) and settings.configured(environ):
            names.append(name)
    return names


def make_provider(
    name: str,
    storage: storage_service_pb2_grpc.StorageServiceAsyncStub,
    status: status_service_pb2_grpc.StatusServiceAsyncStub,
) -> Provider:
    if name not in PROVIDERS:
        raise SystemExit(f"WORKER_PROVIDER: unknown provider {name!r}; known: {', '.join(sorted(PROVIDERS))}")
    return adapter_class(name).from_env(storage, status)


__all__ = [
    "PROVIDERS",
    "adapter_class",
    "configured",
    "GeneratedImage",
    "Progress",
    "Provider",
    "ProviderError",
    "ProviderResult",
    "make_provider",
]

"""Provider adapters: one per upstream API, behind one interface (`Provider`).

`WORKER_PROVIDER` picks the adapter; each is imported only when chosen, and builds itself
from the environment (`Provider.from_env`).
"""

import importlib

from worker.providers.base import GeneratedImage, Progress, Provider, ProviderError, ProviderResult

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
}


def make_provider(name: str) -> Provider:
    try:
        module, _, cls = PROVIDERS[name].partition(":")
    except KeyError:
        raise SystemExit(f"WORKER_PROVIDER: unknown provider {name!r}; known: {', '.join(sorted(PROVIDERS))}") from None
    return getattr(importlib.import_module(module), cls).from_env()


__all__ = ["GeneratedImage", "PROVIDERS", "Progress", "Provider", "ProviderError", "ProviderResult", "make_provider"]

"""Provider adapters: one per upstream API, behind one interface (`Provider`)."""

from worker.providers.base import GeneratedImage, Provider, ProviderError
from worker.providers.local import LocalProvider

PROVIDERS: dict[str, type[Provider]] = {"local": LocalProvider}


def make_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]()
    except KeyError:
        raise SystemExit(f"WORKER_PROVIDER: unknown provider {name!r}; known: {', '.join(sorted(PROVIDERS))}") from None


__all__ = ["GeneratedImage", "PROVIDERS", "Provider", "ProviderError", "make_provider"]

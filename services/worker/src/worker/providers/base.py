"""What an adapter hands back to the worker (see worker.providers.adapter for the interface).

An adapter turns one generation into a `ProviderResult`: it reports progress (and partial
images, when the client streams) through `Progress`, names its upstream job through
`Progress.upstream` so a cancel can reach it, and raises `ProviderError` classified for
the gateway: `retryable` means another route (provider) may still succeed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    width: int
    height: int
    output_format: gen.OutputFormat.ValueType
    revised_prompt: str = ""


@dataclass
class ProviderResult:
    images: list[GeneratedImage]
    # Token usage of token-priced upstreams (gpt-image-*).
    usage: gen.Usage | None = None
    # Midjourney-style buttons on the result, and describe's prompts.
    buttons: list[gen.Button] = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)


class ProviderError(Exception):
    """An upstream failure, classified: retryable ones may go to another route."""

    def __init__(self, code: ErrorCode, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class Progress:
    """What an adapter reports while it works: `await progress(percent, partial=None)`,
    and `progress.upstream(job_id)` once the upstream accepted the job."""

    def __init__(
        self,
        report: Callable[[float, GeneratedImage | None], Awaitable[None]],
        on_upstream: Callable[[str], None] = lambda _id: None,
    ) -> None:
        self._report = report
        self._on_upstream = on_upstream
        self.upstream_id = ""

    async def __call__(self, percent: float, partial: GeneratedImage | None = None) -> None:
        await self._report(max(0.0, min(100.0, percent)), partial)

    def upstream(self, job_id: str) -> None:
        self.upstream_id = job_id
        self._on_upstream(job_id)

"""The interface every provider adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode

@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    width: int
    height: int
    output_format: int  # gen.OutputFormat
    revised_prompt: str = ""


class ProgressCallback(Protocol):
    """Called with a percentage (0..100) as the upstream job advances, and with each partial
    image (stream=true) as it arrives; the core stores partials before the final images."""

    def __call__(self, percent: float, partial: GeneratedImage | None = None) -> Awaitable[None]: ...


class ProviderError(Exception):
    """An upstream failure, classified: retryable ones may go to another route."""

    def __init__(self, code: ErrorCode, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class Provider(ABC):
    name: str

    @abstractmethod
    async def generate(self, generation: gen.Generation, progress: ProgressCallback) -> list[GeneratedImage]:
        """Produce all `params.n` images of the generation, in order."""

    async def close(self) -> None:
        """Release connections (HTTP clients) on shutdown."""

"""The interface every provider adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode

# Called with a percentage (0..100) as the upstream job advances.
ProgressCallback = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    width: int
    height: int
    output_format: int  # gen.OutputFormat
    revised_prompt: str = ""


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

"""What the worker's adapter tests share: generations as the adapters receive them, a
progress recorder, and a storage client over stored bytes (no services, no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.storage.v1 import storage_service_pb2 as storage_pb
from worker.providers import GeneratedImage, Progress


def generation(
    model: str = "",
    width: int = 0,
    height: int = 0,
    fmt: int = gen.OUTPUT_FORMAT_PNG,
    *,
    prompt: str = "p",
    size: str = "",
    seed: int = 0,
    quality: str = "",
    **params,
) -> gen.Generation:
    """A generation as routing resolves it: its size (from a WxH `size` unless width and
    height are given; 1024x1024 otherwise), seed, format and quality decided."""
    if not (width and height):
        w, _, h = size.partition("x")
        width, height = (int(w), int(h)) if w.isdigit() and h.isdigit() else (1024, 1024)
    return gen.Generation(
        model=model,
        width=width,
        height=height,
        seed=seed,
        output_format=fmt,
        quality=quality,
        params=gen.GenerationParams(model=model, prompt=prompt, size=size, output_format=fmt, **params),
    )


class Recorder:
    """A Progress (`.progress`) whose reports are kept: (percent, partial image or None)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, GeneratedImage | None]] = []
        self.upstream_ids: list[str] = []

        async def report(percent: float, partial: GeneratedImage | None) -> None:
            self.seen.append((percent, partial))

        self.progress = Progress(report, self.upstream_ids.append)


class Storage:
    """The storage service over a dict of object key -> bytes: GetImage, and PutImage
    (which stores nothing and answers the generation's first key)."""

    def __init__(self, stored: dict[str, bytes] | None = None) -> None:
        self.stored = stored or {}

    async def PutImage(self, parts, timeout: float) -> storage_pb.PutImageResponse:  # noqa: N802, ANN001
        header = None
        async for part in parts:
            header = header or part.header
        return storage_pb.PutImageResponse(image=gen.ImageRef(object_key=f"days-7/{header.generation_id}/0.png"))

    def GetImage(
        self, request: storage_pb.GetImageRequest, timeout: float
    ) -> AsyncIterator[storage_pb.GetImageResponse]:  # noqa: N802
        async def parts() -> AsyncIterator[storage_pb.GetImageResponse]:
            if request.object_key not in self.stored:
                raise grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata())
            yield storage_pb.GetImageResponse(chunk=self.stored[request.object_key])

        return parts()

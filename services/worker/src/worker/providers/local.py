"""The `local` provider: model pixelmesh-sketch, rendered on this machine's CPU.

Generations, edits (repaint under the mask), variations (re-render seeded from the input)
and, for stream=true, partial images (coarse-to-fine previews of the first image). Input
images are read from storage by the object keys the edge stored them under.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.storage.v1 import storage_service_pb2 as storage_pb
from pixelmesh.storage.v1 import storage_service_pb2_grpc
from svckit import formats
from svckit.errors import ErrorCode
from svckit.grpc_client import channel
from worker import render_inputs
from worker.providers.base import GeneratedImage, Progress, Provider, ProviderError, ProviderResult
from worker.render import render_image

InputReader = Callable[[str], Awaitable[bytes]]


class LocalProvider(Provider):
    name = "local"

    def __init__(self, read_input: InputReader | None = None) -> None:
        self._read_input = read_input
        self._channel: grpc.aio.Channel | None = None

    async def _read_from_storage(self, object_key: str) -> bytes:
        if self._channel is None:  # only edits and variations need it
            from svckit.settings import load_settings
            from worker.settings import WorkerSettings

            self._channel = channel(load_settings(WorkerSettings).storage_addr)
        stub = storage_service_pb2_grpc.StorageServiceStub(self._channel)
        try:
            parts = [
                p.chunk async for p in stub.GetImage(storage_pb.GetImageRequest(object_key=object_key), timeout=60)
            ]
        except grpc.aio.AioRpcError as exc:
            retryable = exc.code() != grpc.StatusCode.NOT_FOUND
            raise ProviderError(
                ErrorCode.INTERNAL, f"reading input {object_key}: {exc.details()}", retryable=retryable
            ) from exc
        return b"".join(parts)

    async def _inputs(self, params: gen.GenerationParams) -> tuple[list[bytes], bytes | None]:
        read = self._read_input or self._read_from_storage
        images: list[bytes] = []
        mask = None
        for item in params.input_images:
            if not item.object_key:
                raise ProviderError(ErrorCode.INVALID_REQUEST, "pixelmesh-sketch reads uploaded images only, not URLs")
            data = await read(item.object_key)
            if item.role == "mask":
                mask = data
            else:
                images.append(data)
        if not images:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "this request needs an input image")
        return images, mask

    async def generate(self, generation: gen.Generation, progress: Progress) -> ProviderResult:
        params = generation.params
        fmt = formats.of(generation.output_format)
        n = params.n or 1
        kind = params.kind or gen.GENERATION_KIND_GENERATE
        inputs = (
            await self._inputs(params) if kind in (gen.GENERATION_KIND_EDIT, gen.GENERATION_KIND_VARIATION) else None
        )
        wanted_partials = params.partial_images if params.stream else 0
        images = []
        for index in range(n):
            try:
                # Rendering holds the GIL only in short stretches (NumPy, Pillow encoders),
                # so a thread keeps the event loop (heartbeats, other jobs) responsive.
                data, previews = await asyncio.to_thread(
                    self._render, generation, kind, inputs, index, fmt.name, wanted_partials if index == 0 else 0
                )
            except ValueError as exc:
                raise ProviderError(ErrorCode.INVALID_REQUEST, str(exc)) from exc
            for k, preview in enumerate(previews):
                partial = GeneratedImage(preview, generation.width, generation.height, fmt.enum)
                await progress(100.0 * (k + 1) / (len(previews) + 1) / n, partial)
            images.append(GeneratedImage(data, generation.width, generation.height, fmt.enum))
            await progress(100.0 * (index + 1) / n)
        return ProviderResult(images)

    @staticmethod
    def _render(
        generation: gen.Generation, kind: int, inputs, index: int, fmt: str, n_partials: int
    ) -> tuple[bytes, list[bytes]]:
        """(final image bytes, partial images' bytes) of image `index`."""
        params = generation.params
        compression = params.output_compression if params.HasField("output_compression") else None
        background = params.background or "auto"
        quality = generation.quality or "standard"
        w, h = generation.width, generation.height
        if kind == gen.GENERATION_KIND_GENERATE:
            data = render_image(
                params.prompt,
                generation.seed,
                w,
                h,
                output_format=fmt,
                quality=quality,
                output_compression=compression,
                background=background,
                index=index,
                negative_prompt=params.negative_prompt,
            ).data
            if not n_partials:
                return data, []
            picture = render_inputs.load_rendered(data)
        else:
            images, mask = inputs
            try:
                if kind == gen.GENERATION_KIND_EDIT:
                    picture = render_inputs.edit(
                        images,
                        mask,
                        params.prompt,
                        generation.seed,
                        w,
                        h,
                        index=index,
                        quality=quality,
                        negative_prompt=params.negative_prompt,
                        background=background,
                    )
                else:
                    picture = render_inputs.variation(images[0], generation.seed, w, h, index=index)
            except OSError as exc:  # undecodable upload (the edge checks them; a redelivered job may not)
                raise ValueError(f"an input image could not be read: {exc}") from exc
            data = render_inputs.encode(picture, fmt, compression, keep_alpha=background == "transparent")
        keep_alpha = background == "transparent"
        previews = [
            render_inputs.encode(p, fmt, compression, keep_alpha) for p in render_inputs.partials(picture, n_partials)
        ]
        return data, previews

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

"""The `local` provider: model pixelmesh-sketch, rendered on this machine's CPU."""

from __future__ import annotations

import asyncio

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit import formats
from svckit.errors import ErrorCode
from worker.providers.base import GeneratedImage, Progress, Provider, ProviderError, ProviderResult
from worker.render import render_image


class LocalProvider(Provider):
    name = "local"

    async def generate(self, generation: gen.Generation, progress: Progress) -> ProviderResult:
        params = generation.params
        fmt = formats.of(generation.output_format)
        n = params.n or 1
        images = []
        for index in range(n):
            try:
                # Rendering holds the GIL only in short stretches (NumPy, Pillow encoders),
                # so a thread keeps the event loop (heartbeats, other jobs) responsive.
                rendered = await asyncio.to_thread(
                    render_image,
                    params.prompt,
                    generation.seed,
                    generation.width,
                    generation.height,
                    output_format=fmt.name,
                    quality=generation.quality or "standard",
                    output_compression=params.output_compression if params.HasField("output_compression") else None,
                    background=params.background or "auto",
                    index=index,
                )
            except ValueError as exc:
                raise ProviderError(ErrorCode.INVALID_REQUEST, str(exc)) from exc
            images.append(GeneratedImage(rendered.data, rendered.width, rendered.height, fmt.enum))
            await progress(100.0 * (index + 1) / n)
        return ProviderResult(images)

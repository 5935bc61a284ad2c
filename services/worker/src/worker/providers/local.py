"""The `local` provider: model pixelmesh-sketch, rendered on this machine's CPU.

Generations, edits (repaint under the mask), variations (re-render seeded from the input)
and, for stream=true, partial images (coarse-to-fine previews of the first image). Input
images are read from storage (the input reader) by the object keys the edge stored them
under. No upstream API: the adapter's HTTP client has no base URL and is never called.
"""

from __future__ import annotations

import asyncio

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit import formats
from svckit.errors import ErrorCode
from worker import render_inputs
from worker.providers.adapter import JobClock, Provider
from worker.providers.base import GeneratedImage, Progress, ProviderError, ProviderResult
from worker.providers.settings import UpstreamSettings
from worker.providers.upstream import Upstream
from worker.render import render_image


class LocalProvider(Provider):
    name = "local"

    @classmethod
    def connect(cls, settings: UpstreamSettings) -> Upstream:
        return Upstream(cls.name, "", retry=settings.retry_policy(), timeout=settings.request_timeout_seconds)

    async def _read_inputs(self, params: gen.GenerationParams) -> tuple[list[bytes], bytes | None]:
        images: list[bytes] = []
        mask = None
        for item in params.input_images:
            if not item.object_key:
                raise ProviderError(ErrorCode.INVALID_REQUEST, "pixelmesh-sketch reads uploaded images only, not URLs")
            data = (await self.inputs.read(item)).data
            if item.role == "mask":
                mask = data
            else:
                images.append(data)
        if not images:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "this request needs an input image")
        return images, mask

    async def run(self, generation: gen.Generation, progress: Progress, clock: JobClock) -> ProviderResult:
        params = generation.params
        fmt = formats.of(generation.output_format)
        n = params.n or 1
        kind = params.kind or gen.GENERATION_KIND_GENERATE
        inputs = (
            await self._read_inputs(params)
            if kind in (gen.GENERATION_KIND_EDIT, gen.GENERATION_KIND_VARIATION)
            else None
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

"""Driving one provider adapter in-process against its emulator (no Kafka, no mesh)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image

from pixelmesh.common.v1 import generation_pb2 as gen
from tests.emulators.harness import EmulatorServer, Faults
from worker.providers import GeneratedImage, Progress

# Fast retries, so fault tests finish in seconds.
FAST_RETRIES = {"WORKER_RETRY_BUDGET_SECONDS": "3", "WORKER_RETRY_BASE_SECONDS": "0.05"}
# Input images hosted by the emulators live on 127.0.0.1, which adapters refuse by default.
EMULATED_INPUTS = {"WORKER_INPUT_URLS_ALLOW_PRIVATE": "true"}


@dataclass
class Recorded:
    """What an adapter reported through Progress."""

    percents: list[float] = field(default_factory=list)
    partials: list[GeneratedImage] = field(default_factory=list)
    upstream_ids: list[str] = field(default_factory=list)

    def progress(self) -> Progress:
        async def report(percent: float, partial: GeneratedImage | None) -> None:
            self.percents.append(percent)
            if partial is not None:
                self.partials.append(partial)

        return Progress(report, self.upstream_ids.append)


def generation(model: str, prompt: str = "a lighthouse at dusk", *, size: str = "1024x1024", n: int = 1,
               quality: str = "", output_format: int = gen.OUTPUT_FORMAT_PNG, seed: int = 7,
               width: int = 0, height: int = 0, **params) -> gen.Generation:
    """A QUEUED generation as routing resolves it (width/height from a WxH size)."""
    if not (width and height):
        w, _, h = size.partition("x")
        width, height = (int(w), int(h)) if h.isdigit() else (1024, 1024)
    return gen.Generation(
        id="gen_adapter_test",
        model=model,
        params=gen.GenerationParams(model=model, prompt=prompt, n=n, size=size, quality=quality,
                                    output_format=output_format, **params),
        state=gen.GENERATION_STATE_RUNNING,
        seed=seed,
        width=width,
        height=height,
        output_format=output_format,
        quality=quality,
    )


def opened(image: GeneratedImage | bytes) -> Image.Image:
    data = image.data if isinstance(image, GeneratedImage) else image
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def reset(server: EmulatorServer, **faults) -> None:
    server.state.faults = Faults(**faults)
    server.state.calls.clear()
    getattr(server.state, "received", []).clear()


def received(server: EmulatorServer) -> list[dict]:
    """The requests the emulated API accepted for validation (fields, file parts)."""
    return list(getattr(server.state, "received", []))


def api_calls(server: EmulatorServer) -> list:
    return list(server.state.calls)

"""What the provider adapter tests share: generations as routing makes them, a progress
recorder, images, and the emulators' control surface (in-process and over HTTP)."""

from __future__ import annotations

import io

import httpx
from PIL import Image

import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.ids import new_generation_id
from tests.emulators.harness import EmulatorServer, Faults
from tests.support.ports import free_port
from worker.providers import GeneratedImage, Progress, Provider, ProviderError, ProviderResult

# Fast retries, so fault tests finish in seconds.
FAST_RETRIES = {"WORKER_RETRY_BUDGET_SECONDS": "3", "WORKER_RETRY_BASE_SECONDS": "0.05"}
# Fast polls of submit-then-poll upstreams.
FAST_POLLS = {"WORKER_POLL_INTERVAL_SECONDS": "0.02", "WORKER_POLL_MAX_INTERVAL_SECONDS": "0.1"}
# Input images hosted by the emulators live on 127.0.0.1, which adapters refuse by default.
EMULATED_INPUTS = {"WORKER_INPUT_URLS_ALLOW_PRIVATE": "true"}


def generation(
    model: str,
    prompt: str = "a lighthouse at dusk",
    *,
    width: int = 0,
    height: int = 0,
    size: str = "",
    n: int = 1,
    quality: str = "",
    output_format: int = gen.OUTPUT_FORMAT_PNG,
    seed: int = 42,
    **params,
) -> gen.Generation:
    """A QUEUED generation as routing admits it: resolved size (from a WxH `size` unless
    width and height are given; 1024x1024 otherwise), seed, format and quality."""
    if not (width and height):
        w, _, h = size.partition("x")
        width, height = (int(w), int(h)) if w.isdigit() and h.isdigit() else (1024, 1024)
    p = gen.GenerationParams(
        model=model, prompt=prompt, n=n, size=size or f"{width}x{height}", quality=quality,
        output_format=output_format, **params,
    )
    return gen.Generation(
        id=new_generation_id(),
        account_id="acct_dev",
        params=p,
        model=model,
        state=gen.GENERATION_STATE_QUEUED,
        version=1,
        attempt=1,
        seed=seed,
        width=width,
        height=height,
        output_format=output_format or gen.OUTPUT_FORMAT_PNG,
        quality=quality,
        retention_class="days-7",
    )


class Recorder:
    """A Progress (`.progress`) whose reports are kept for assertions."""

    def __init__(self) -> None:
        self.percents: list[float] = []
        self.partials: list[GeneratedImage] = []
        self.upstream_ids: list[str] = []

        async def report(percent: float, partial: GeneratedImage | None) -> None:
            self.percents.append(percent)
            if partial is not None:
                self.partials.append(partial)

        self.progress = Progress(report, self.upstream_ids.append)


async def run(provider: Provider, g: gen.Generation) -> tuple[ProviderResult, Recorder]:
    rec = Recorder()
    return await provider.generate(g, rec.progress), rec


async def failure(provider: Provider, g: gen.Generation) -> ProviderError:
    with pytest.raises(ProviderError) as exc:
        await provider.generate(g, Recorder().progress)
    return exc.value


def opened(image: GeneratedImage | bytes) -> Image.Image:
    data = image.data if isinstance(image, GeneratedImage) else image
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def image_info(data: bytes) -> tuple[str, int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return (image.format or "").lower(), image.width, image.height


def png(width: int = 64, height: int = 64, color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


# ---- an emulator in this process -----------------------------------------------------------


def reset(server: EmulatorServer, **faults) -> None:
    server.state.faults = Faults(**faults)
    server.state.calls.clear()
    getattr(server.state, "received", []).clear()


def received(server: EmulatorServer) -> list[dict]:
    """The requests the emulated API accepted for validation (fields, file parts)."""
    return list(getattr(server.state, "received", []))


def api_calls(server: EmulatorServer) -> list:
    return list(server.state.calls)


# ---- an emulator over HTTP -----------------------------------------------------------------


class Control:
    """The emulator's /_emulator surface, over HTTP as any client would use it."""

    def __init__(self, url: str) -> None:
        self.url = url

    def reset(self) -> None:
        httpx.post(f"{self.url}/_emulator/reset").raise_for_status()

    def faults(self, **faults) -> None:
        httpx.post(f"{self.url}/_emulator/faults", json=faults).raise_for_status()

    def calls(self, method: str | None = None, prefix: str = "") -> list[dict]:
        calls = httpx.get(f"{self.url}/_emulator/calls").json()["calls"]
        return [c for c in calls if (method is None or c["method"] == method) and c["path"].startswith(prefix)]

    def get(self, path: str) -> dict:
        return httpx.get(f"{self.url}{path}").json()


def emulator_fixtures(name: str, api_key: str = "emulator-key"):  # noqa: ANN201 (two pytest fixtures)
    """A test module's `emulator` (tests/emulators/<name>.py, started once for the module)
    and `control` (its /_emulator surface, reset before each test):
    `emulator, control = emulator_fixtures("fal", KEY)` at the module's top level."""

    @pytest.fixture(scope="module")
    def emulator():  # noqa: ANN202
        server = EmulatorServer(name, free_port(), api_key=api_key).start()
        yield server
        server.stop()

    @pytest.fixture
    def control(emulator) -> Control:  # noqa: ANN001
        c = Control(emulator.url)
        c.reset()
        return c

    return emulator, control

"""Serving emulators as real HTTP servers, with faults tests can switch on.

Control surface of every emulator (never part of the emulated API):
- `POST /_emulator/faults` `{"fail_first": N, "fail_status": 503, "retry_after": 1,
  "down": false, "latency_ms": 0, "job_seconds": 0}`: the next N API calls fail with
  fail_status (and Retry-After); `down` answers every API call 503; `latency_ms` delays
  each API call; `job_seconds` is how long emulated async jobs take.
- `GET /_emulator/calls`: the API calls received so far (method, path, authorized).
- `POST /_emulator/reset`: faults off, calls forgotten.
Refusals are part of each API: a prompt containing REFUSED_WORD is refused by the emulated
upstream's own moderation, in its own error format.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import hashlib
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, ImageDraw

REFUSED_WORD = "forbidden"


@dataclass
class Faults:
    fail_first: int = 0
    fail_status: int = 503
    retry_after: float | None = None
    down: bool = False
    latency_ms: int = 0
    job_seconds: float = 0.0


@dataclass
class Call:
    method: str
    path: str
    authorized: bool
    time: float


@dataclass
class EmulatorState:
    """What an emulator app shares with its harness: faults, calls, hosted result files."""

    api_key: str = "emulator-key"
    faults: Faults = field(default_factory=Faults)
    calls: list[Call] = field(default_factory=list)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    base_url: str = ""

    def host_file(self, data: bytes, media_type: str = "image/png", ext: str = "png") -> str:
        """Serve bytes under /_files/<digest>.<ext> (as upstream CDNs do) and return the URL."""
        name = hashlib.sha256(data).hexdigest()[:24] + "." + ext
        self.files[name] = (data, media_type)
        return f"{self.base_url}/_files/{name}"


def fake_image(width: int, height: int, seed: str, fmt: str = "PNG") -> bytes:
    """A small real image, deterministic in (size, seed): a gradient and a disc."""
    digest = hashlib.sha256(seed.encode()).digest()
    image = Image.new("RGB", (width, height), tuple(digest[:3]))
    draw = ImageDraw.Draw(image)
    r = min(width, height) // 3
    cx, cy = width // 2, height // 2
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(digest[3:6]))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def install(app: FastAPI, state: EmulatorState, authorized) -> FastAPI:
    """Add the control surface, hosted files and the fault middleware to an emulator app.

    `authorized(request) -> bool` says whether the request carries the emulator's key in
    the upstream's own way (Bearer, x-key, Token, ...)."""
    app.state.emulator = state

    @app.middleware("http")
    async def faults(request: Request, call_next):
        path = request.url.path
        if path.startswith("/_emulator") or path.startswith("/_files"):
            return await call_next(request)
        state.calls.append(Call(request.method, path, bool(authorized(request)), time.time()))
        f = state.faults
        if f.latency_ms:
            await asyncio.sleep(f.latency_ms / 1000)
        if f.down:
            return JSONResponse({"error": {"message": "service unavailable"}}, status_code=503)
        if f.fail_first > 0:
            f.fail_first -= 1
            headers = {"Retry-After": str(f.retry_after)} if f.retry_after is not None else None
            return JSONResponse({"error": {"message": "injected failure"}}, status_code=f.fail_status, headers=headers)
        return await call_next(request)

    @app.post("/_emulator/faults")
    async def set_faults(request: Request) -> dict:
        body = await request.json()
        state.faults = Faults(**body)
        return {"ok": True}

    @app.get("/_emulator/calls")
    async def calls() -> dict:
        return {"calls": [c.__dict__ for c in state.calls]}

    @app.post("/_emulator/reset")
    async def reset() -> dict:
        state.faults = Faults()
        state.calls.clear()
        return {"ok": True}

    @app.get("/_files/{name}")
    async def files(name: str) -> Response:
        found = state.files.get(name)
        if found is None:
            return JSONResponse({"error": "expired or unknown"}, status_code=404)
        return Response(found[0], media_type=found[1])

    return app


def load(name: str, state: EmulatorState) -> FastAPI:
    return importlib.import_module(f"tests.emulators.{name}").create_app(state)


class EmulatorServer:
    """An emulator served by uvicorn in a background thread of this process."""

    def __init__(self, name: str, port: int, api_key: str = "emulator-key", create_app=None) -> None:
        self.name = name
        self.state = EmulatorState(api_key=api_key, base_url=f"http://127.0.0.1:{port}")
        self.url = self.state.base_url
        app = create_app(self.state) if create_app else load(name, self.state)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"emulator-{name}", daemon=True)

    def start(self) -> EmulatorServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"emulator {self.name} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description="serve an upstream emulator")
    parser.add_argument("name")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default="emulator-key")
    args = parser.parse_args()
    state = EmulatorState(api_key=args.api_key, base_url=f"http://127.0.0.1:{args.port}")
    uvicorn.run(load(args.name, state), host="127.0.0.1", port=args.port, log_level="warning", lifespan="off")

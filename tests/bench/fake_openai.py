"""A fake OpenAI Images upstream for `make bench`: answers at once, never the bottleneck.

A bare asyncio HTTP/1.1 server (one `asyncio.Protocol` per connection, keep-alive, no
framework), a few thousand requests per second on one core:

- `POST .../images/generations` (any path ending so; any `Authorization: Bearer`) answers
  at once in dall-e-3's shape: `{"created", "data": [{"url", "revised_prompt"}]}`, with
  the URL of the image below, or `b64_json` when the body asks `response_format: b64_json`;
  `n` images when it asks for several. Every answer has an `x-request-id`.
- `GET /images/fake.png`: a deterministic 1024x1024 PNG of about 7 KB (a gradient with
  light noise), built once at start with Pillow.
- `GET /healthz` -> 200; `GET /_stats` -> what it served (generations, downloads, others).

Run: python -m tests.bench.fake_openai --port 8001 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import random
import signal
import time

from PIL import Image

IMAGE_PATH = "/images/fake.png"
MAX_HEADER = 64 * 1024
MAX_BODY = 8 * 1024 * 1024


def fake_png(size: int = 1024, noise: int = 140, seed: int = 7) -> bytes:
    """A 1024x1024 RGB PNG of about 7 KB: two crossed gradients and sparse noise."""
    ramp = Image.linear_gradient("L").resize((size, size))
    image = Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.ROTATE_90), Image.new("L", (size, size), 128)))
    pixels = image.load()
    rng = random.Random(seed)
    for _ in range(noise):
        pixels[rng.randrange(size), rng.randrange(size)] = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


class State:
    def __init__(self, host: str, port: int) -> None:
        self.png = fake_png()
        self.b64 = base64.b64encode(self.png).decode()
        self.url = f"http://{host}:{port}{IMAGE_PATH}"
        self.counts: dict = {"generations": 0, "downloads": 0, "other": 0, "other_paths": {}}
        self.request_id = 0


def response(status: str, body: bytes, content_type: bytes, keep_alive: bool, extra: bytes = b"") -> bytes:
    return b"".join((
        b"HTTP/1.1 ", status.encode(), b"\r\ncontent-type: ", content_type,
        b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n", extra,
        b"" if keep_alive else b"connection: close\r\n", b"\r\n", body,
    ))


def error(status: str, message: str, keep_alive: bool) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}})
    return response(status, body.encode(), b"application/json", keep_alive)


class HttpProtocol(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER:
                    self._send(error("431 Request Header Fields Too Large", "headers too large", False), close=True)
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            try:
                method, target, version = head[0].split(" ", 2)
            except ValueError:
                self._send(error("400 Bad Request", "bad request line", False), close=True)
                return
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._send(error("501 Not Implemented", "chunked bodies are not supported", False), close=True)
                return
            length = int(headers.get("content-length") or 0)
            if length > MAX_BODY:
                self._send(error("413 Payload Too Large", "body too large", False), close=True)
                return
            if len(self.buffer) < end + 4 + length:
                return  # the rest of the body is still on its way
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            connection = headers.get("connection", "").lower()
            keep_alive = connection != "close" and (version != "HTTP/1.0" or connection == "keep-alive")
            self._send(self.handle(method, target.split("?", 1)[0], body, keep_alive), close=not keep_alive)

    def _send(self, data: bytes, close: bool) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if close:
            self.transport.close()

    def handle(self, method: str, path: str, body: bytes, keep_alive: bool) -> bytes:
        state = self.state
        if method == "POST" and path.rstrip("/").endswith("/images/generations"):
            try:
                request = json.loads(body or b"{}")
                if not isinstance(request, dict):
                    raise ValueError
            except ValueError:
                return error("400 Bad Request", "We could not parse the JSON body of your request.", keep_alive)
            state.counts["generations"] += 1
            state.request_id += 1
            prompt = str(request.get("prompt") or "")
            try:
                n = max(1, min(10, int(request.get("n") or 1)))
            except (TypeError, ValueError):
                n = 1
            if request.get("response_format") == "b64_json":
                item = {"b64_json": state.b64}
            else:
                item = {"url": state.url}
            item["revised_prompt"] = f"A detailed rendering of {prompt[:200]}"
            answer = json.dumps({"created": int(time.time()), "data": [item] * n}).encode()
            return response("200 OK", answer, b"application/json", keep_alive,
                            b"x-request-id: req_fake_%d\r\n" % state.request_id)
        if method in ("GET", "HEAD") and path == IMAGE_PATH:
            state.counts["downloads"] += 1
            return response("200 OK", state.png if method == "GET" else b"", b"image/png", keep_alive)
        if method == "GET" and path == "/healthz":
            return response("200 OK", b'{"status":"ok"}', b"application/json", keep_alive)
        if method == "GET" and path == "/_stats":
            return response("200 OK", json.dumps(state.counts).encode(), b"application/json", keep_alive)
        state.counts["other"] += 1
        others = state.counts["other_paths"]
        if len(others) < 50 or f"{method} {path}" in others:
            others[f"{method} {path}"] = others.get(f"{method} {path}", 0) + 1
        return error("404 Not Found", f"no route {method} {path}", keep_alive)


async def serve(host: str, port: int) -> None:
    state = State(host, port)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(state), host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"fake openai upstream on http://{host}:{port}/v1 (image {len(state.png)} bytes)", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI Images upstream (instant answers)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

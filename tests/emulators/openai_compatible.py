"""OpenAI-compatible image servers (docs/provider-contracts-2.md §13c), three of them on one
port, each under its own base path, so a client's configurable base path is exercised:

- `/vllm/v1/images/generations`: vLLM-Omni serving one model (MODEL; another `model` is a
  404 `{"detail"}`). `response_format` b64_json (default) or `file`; `url` is a 400
  `{"detail"}`; `size` "WxH" else 400 `{"detail": "Invalid size format..."}`; `n` 1-10 else
  422 `{"detail": [{loc, msg, type}]}`. Extra fields go to the pipeline unchecked (recorded).
  A prompt with "upstream-error" answers 500 `{"detail"}`.
- `/sdcpp/v1/images/generations`: stable-diffusion.cpp's sd-server: prompt, n, size,
  output_format, output_compression at the top; `<sd_cpp_extra_args>{json}</...>` in the
  prompt carries seed, negative_prompt, sample_params (bad JSON: 400 `{"error": "invalid
  params"}`; no prompt: 400 `{"error": "prompt required"}`). Always b64_json, in output_format.
- `/localai/v1/images/generations`: the negative prompt after `|`; `step`; returns `url`
  (under /generated-images/) unless `response_format` is b64_json; errors
  `{"error": {"code", "message", "type"}}`.

No auth unless the emulator's key is set as a Bearer token (`--api-key` servers): a wrong
one is 401. No moderation. `GET /_emulator/openai_compatible/requests`: what each got.
"""

from __future__ import annotations

import base64
import json
import re
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.emulators.harness import EmulatorState, fake_image, install

MODEL = "black-forest-labs/FLUX.1-dev"
SIZE = re.compile(r"^(\d+)x(\d+)$")
SDCPP_ARGS = re.compile(r"<sd_cpp_extra_args>(.*?)</sd_cpp_extra_args>", re.S)


def create_app(state: EmulatorState) -> FastAPI:
    app = FastAPI()
    received: list[dict] = []
    generated: dict[str, bytes] = {}

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") in (None, f"Bearer {state.api_key}")

    @app.middleware("http")
    async def auth(request: Request, call_next):
        if request.url.path == "/_emulator/reset":
            received.clear()
        if not request.url.path.startswith(("/_emulator", "/_files", "/localai/generated-images")) and not authorized(request):
            return JSONResponse({"detail": "Unauthorized"}, 401)
        return await call_next(request)

    install(app, state, authorized)

    async def body_of(request: Request) -> object:
        try:
            return await request.json()
        except ValueError:
            return None

    def size(text: object) -> tuple[int, int] | None:
        m = SIZE.match(text) if isinstance(text, str) else None
        return (int(m.group(1)), int(m.group(2))) if m else None

    @app.post("/vllm/v1/images/generations")
    async def vllm(request: Request):
        body = await body_of(request)
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return JSONResponse({"detail": [{"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"}]}, 422)
        received.append({"server": "vllm", "body": body})
        if body.get("model") not in (None, MODEL):
            return JSONResponse({"detail": f"The model `{body['model']}` does not exist."}, 404)
        n = body.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 10:
            return JSONResponse({"detail": [{"loc": ["body", "n"], "msg": "Input should be less than or equal to 10",
                                             "type": "less_than_equal"}]}, 422)
        wh = size(body.get("size", "1024x1024"))
        if wh is None:
            return JSONResponse({"detail": "Invalid size format: expected WIDTHxHEIGHT"}, 400)
        fmt = body.get("response_format", "b64_json")
        if fmt not in ("b64_json", "file"):
            return JSONResponse({"detail": f"response_format '{fmt}' is not supported; use b64_json or file"}, 400)
        if "upstream-error" in body["prompt"]:
            return JSONResponse({"detail": "Image generation failed: CUDA error: an illegal memory access"}, 500)
        images = [fake_image(*wh, f"{body['prompt']}|{body.get('seed')}|{body.get('negative_prompt')}|{i}")
                  for i in range(n)]
        if fmt == "file":
            return Response(images[0], media_type="image/png")
        return {"created": int(time.time()),
                "data": [{"b64_json": base64.b64encode(i).decode(), "url": None, "revised_prompt": None} for i in images]}

    @app.post("/sdcpp/v1/images/generations")
    async def sdcpp(request: Request):
        body = await body_of(request)
        if not isinstance(body, dict) or not body.get("prompt"):
            return JSONResponse({"error": "prompt required"}, 400)
        prompt = str(body["prompt"])
        args: dict = {}
        if found := SDCPP_ARGS.search(prompt):
            try:
                args = json.loads(found.group(1))
            except ValueError:
                return JSONResponse({"error": "invalid params"}, 400)
            prompt = SDCPP_ARGS.sub("", prompt)
        received.append({"server": "sdcpp", "body": body, "prompt": prompt, "args": args})
        wh = size(body.get("size", "512x512"))
        fmt = body.get("output_format", "png")
        if wh is None or fmt not in ("png", "jpeg", "webp") or not isinstance(args, dict):
            return JSONResponse({"error": "invalid params"}, 400)
        if "upstream-error" in prompt:
            return JSONResponse({"error": "generate_image returned no results"}, 500)
        pil = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
        images = [fake_image(*wh, f"{prompt}|{args.get('seed')}|{args.get('negative_prompt')}|{i}", pil)
                  for i in range(int(body.get("n", 1)))]
        return {"created": int(time.time()), "output_format": fmt,
                "data": [{"b64_json": base64.b64encode(i).decode()} for i in images]}

    @app.post("/localai/v1/images/generations")
    async def localai(request: Request):
        body = await body_of(request)
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return JSONResponse({"error": {"code": 400, "message": "invalid request body", "type": ""}}, 400)
        received.append({"server": "localai", "body": body})
        positive, _, negative = body["prompt"].partition("|")
        wh = size(body.get("size", "512x512"))
        if wh is None:
            return JSONResponse({"error": {"code": 500, "message": "invalid value for size", "type": ""}}, 500)
        if "upstream-error" in positive:
            return JSONResponse({"error": {"code": 500, "message": "could not load model: rpc error", "type": ""}}, 500)
        data = []
        for i in range(int(body.get("n", 1))):
            image = fake_image(*wh, f"{positive}|{negative}|{body.get('step')}|{i}")
            if body.get("response_format") == "b64_json":
                data.append({"b64_json": base64.b64encode(image).decode()})
            else:
                name = f"b{len(generated)}.png"
                generated[name] = image
                data.append({"url": f"{state.base_url}/localai/generated-images/{name}"})
        return {"created": int(time.time()), "id": "img-1", "data": data}

    @app.get("/localai/generated-images/{name}")
    async def generated_image(name: str):
        found = generated.get(name)
        return Response(found, media_type="image/png") if found else Response(status_code=404)

    @app.get("/_emulator/openai_compatible/requests")
    async def listing():
        return {"requests": received}

    return app

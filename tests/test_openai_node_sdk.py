"""The official OpenAI Node SDK (npm `openai`), unchanged, against the real mesh.

npm installs the pinned SDK from tests/node/package-lock.json into tests/node/node_modules
(ignored by git) on the first run; later runs find it there and skip npm.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.images import decode, image_bytes, mask_bytes

NODE_DIR = Path(__file__).parent / "node"


def _installed() -> bool:
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    wanted = lock["packages"]["node_modules/openai"]["version"]
    have = NODE_DIR / "node_modules/openai/package.json"
    return have.exists() and json.loads(have.read_text())["version"] == wanted


@pytest.fixture(scope="module")
def node_sdk() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed (the README's prerequisites)")
    if not _installed():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True, timeout=300)
    return NODE_DIR / "sdk_check.mjs"


@pytest.fixture(scope="module")
def report(node_sdk: Path, edge_url: str, api_key: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("node-inputs")
    (folder / "input.png").write_bytes(image_bytes(256, 256))
    (folder / "mask.png").write_bytes(mask_bytes(256, 256))
    env = {**os.environ, "PIXELMESH_BASE_URL": f"{edge_url}/v1", "PIXELMESH_API_KEY": api_key}
    done = subprocess.run(["node", str(node_sdk), str(folder / "input.png"), str(folder / "mask.png")],
                          cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_generate_b64_with_extensions(report: dict) -> None:
    g = report["generate"]
    assert g["count"] == 2 and g["size"] == "512x512" and g["output_format"] == "webp"
    images = [decode(base64.b64decode(b)) for b in g["b64"]]
    assert all((i.format, i.size) == ("WEBP", (512, 512)) for i in images)
    assert g["perf"]["model_used"] == "pixelmesh-sketch" and g["perf"]["quality"] == "hd" and g["tokens_spent"] == 2


def test_url_and_aspect_ratio(report: dict) -> None:
    assert report["url"]["size"] == "832x1248"
    assert decode(httpx.get(report["url"]["url"], timeout=30).content).size == (832, 1248)


def test_sse_stream(report: dict) -> None:
    types = [e["type"] for e in report["stream"]]
    assert types == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e["index"] for e in report["stream"][:2]] == [0, 1]
    assert decode(base64.b64decode(report["stream"][-1]["b64"])).size == (256, 256)
    assert report["edit_stream"] == ["image_edit.partial_image", "image_edit.completed"]


def test_edits_and_variations(report: dict) -> None:
    edited = decode(base64.b64decode(report["edit"]["b64"])).convert("RGB")
    assert edited.size == (256, 256)
    assert edited.getpixel((10, 128)) == (200, 40, 40), "the unmasked half is the input"
    assert edited.getpixel((250, 128)) != (200, 40, 40)
    assert report["edit_several"]["count"] == 1 and report["edit_several"]["url"].startswith("http")
    assert report["variation"]["count"] == 2 and len(set(report["variation"]["b64"])) == 2


def test_models_and_typed_errors(report: dict) -> None:
    sketch = [m for m in report["models"] if m["id"] == "pixelmesh-sketch"]
    assert sketch == [{"id": "pixelmesh-sketch", "capabilities": {
        "generations": True, "edits": True, "variations": True, "streaming": True, "image_input": True,
        "token_usage": False}}]
    assert all(m["capabilities"]["generations"] for m in report["models"])
    assert report["error"] == {"name": "BadRequestError", "status": 400, "param": "size", "code": "invalid_request",
                               "type": "invalid_request_error"}
    assert report["not_found"] == {"name": "NotFoundError", "status": 404}

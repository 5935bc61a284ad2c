"""The vertex adapter (Imagen 4 on Vertex AI `:predict`) against its emulator over real HTTP:
the request it sends, 2K, moderation both ways, retries, a refused token, and the
service-account flow (an RS256 assertion verified by the emulator's token endpoint)."""

from __future__ import annotations

import json

import httpx
import pytest
from Crypto.PublicKey import RSA

from svckit.errors import ErrorCode
from tests.emulators.harness import REFUSED_WORD, EmulatorServer
from tests.emulators.vertex import OUTPUT_FLAGGED, PARTLY_FLAGGED
from tests.support.ledger import admin_client, funded_key, settled
from tests.support.polling import wait_finished
from tests.support.ports import free_port
from tests.support.provider_mesh import require_route, start_worker
from tests.support.provider_jobs import (
    EMULATED_INPUTS, FAST_RETRIES, api_calls, failure, generation, opened, received, reset, run,
)
from worker.providers.vertex import VertexProvider, VertexSettings

TOKEN = "ya29.test-vertex-token-123"
PROJECT = "pixelmesh-test"


@pytest.fixture(scope="module")
def server():
    srv = EmulatorServer("vertex", free_port(), api_key=TOKEN).start()
    yield srv
    srv.stop()


def settings(server: EmulatorServer, **env: str) -> VertexSettings:
    return VertexSettings(**{"VERTEX_ACCESS_TOKEN": TOKEN, "VERTEX_PROJECT": PROJECT,
                             "VERTEX_BASE_URL": f"{server.url}/v1", **FAST_RETRIES, **EMULATED_INPUTS, **env})


@pytest.fixture
async def provider(server):
    reset(server)
    p = VertexProvider.build(settings(server))
    yield p
    await p.close()


async def test_n_images_in_one_predict_at_the_nearest_ratio(server, provider) -> None:
    result, rec = await run(provider, generation("imagen-4", "a lighthouse", size="1408x768", n=2,
                                                 negative_prompt="fog"))
    [sent] = received(server)
    assert (sent["project"], sent["location"], sent["model"]) == (PROJECT, "us-central1", "imagen-4.0-generate-001")
    p = sent["parameters"]
    assert (p["sampleCount"], p["aspectRatio"], p["negativePrompt"], p["addWatermark"]) == (2, "16:9", "fog", True)
    assert "seed" not in p  # not deterministic with the watermark on
    assert [opened(i).size for i in result.images] == [(1408, 768)] * 2 and rec.percents[-1] == 100.0


async def test_2k_and_ultra_one_image_per_request(server, provider) -> None:
    result, _ = await run(provider, generation("imagen-4-fast", size="2816x1536"))
    assert received(server)[0]["parameters"]["sampleImageSize"] == "2K"
    assert opened(result.images[0]).size == (2816, 1536)
    reset(server)
    result, _ = await run(provider, generation("imagen-4-ultra", size="896x1280", n=2))
    sent = received(server)
    assert [s["parameters"]["sampleCount"] for s in sent] == [1, 1] and "sampleImageSize" not in sent[0]["parameters"]
    assert [opened(i).size for i in result.images] == [(896, 1280)] * 2


async def test_provider_options_reach_the_parameters(server, provider) -> None:
    g = generation("imagen-4")
    g.params.provider_options.update({"enhancePrompt": False, "language": "ja"})
    await run(provider, g)
    p = received(server)[0]["parameters"]
    assert (p["enhancePrompt"], p["language"]) == (False, "ja")


@pytest.mark.parametrize(("prompt", "n"), [(f"a {REFUSED_WORD} thing", 1), (OUTPUT_FLAGGED, 1), (PARTLY_FLAGGED, 2)])
async def test_a_blocked_prompt_or_filtered_output_is_content_policy_and_not_retried(server, provider, prompt, n):
    err = await failure(provider, generation("imagen-4", prompt, n=n))
    assert err.code is ErrorCode.CONTENT_POLICY_VIOLATION and not err.retryable
    assert len(api_calls(server)) == 1


async def test_429_and_5xx_are_retried(server) -> None:
    reset(server, fail_first=2, fail_status=429)
    p = VertexProvider.build(settings(server))
    try:
        result, _ = await run(p, generation("imagen-4"))
    finally:
        await p.close()
    assert len(result.images) == 1 and len(api_calls(server)) == 3


async def test_a_refused_token_is_the_operators(server) -> None:
    reset(server)
    p = VertexProvider.build(settings(server, VERTEX_ACCESS_TOKEN="ya29.wrong"))
    try:
        err = await failure(p, generation("imagen-4"))
    finally:
        await p.close()
    assert err.code is ErrorCode.PROVIDER_AUTH and "ya29.wrong" not in err.message


async def test_a_service_account_key_mints_its_own_token(server, tmp_path) -> None:
    reset(server)
    key = RSA.generate(2048)
    email = "imagen@pixelmesh-test.iam.gserviceaccount.com"
    server.state.service_accounts[email] = key.publickey().export_key().decode()
    path = tmp_path / "key.json"
    path.write_text(json.dumps({"type": "service_account", "client_email": email, "private_key_id": "k1",
                                "private_key": key.export_key().decode(), "token_uri": f"{server.url}/token"}))
    p = VertexProvider.build(settings(server, VERTEX_ACCESS_TOKEN="", VERTEX_SERVICE_ACCOUNT_FILE=str(path)))
    try:
        await run(p, generation("imagen-4"))
        await run(p, generation("imagen-4"))
    finally:
        await p.close()
    assert server.state.grants == [email]  # one token, reused until it nears its expiry
    # A key the token endpoint does not know is refused: the operator's problem.
    other = RSA.generate(2048)
    path.write_text(json.dumps({"type": "service_account", "client_email": "stranger@x.iam.gserviceaccount.com",
                                "private_key": other.export_key().decode(), "token_uri": f"{server.url}/token"}))
    p = VertexProvider.build(settings(server, VERTEX_ACCESS_TOKEN="", VERTEX_SERVICE_ACCOUNT_FILE=str(path)))
    try:
        err = await failure(p, generation("imagen-4"))
    finally:
        await p.close()
    assert err.code is ErrorCode.PROVIDER_AUTH


def test_settings_need_a_credential(server) -> None:
    with pytest.raises(ValueError, match="VERTEX_ACCESS_TOKEN or VERTEX_SERVICE_ACCOUNT_FILE"):
        settings(server, VERTEX_ACCESS_TOKEN="")


# ---- through the real mesh: Kafka, pricing's ledger, storage, status, a vertex worker ----

@pytest.fixture(scope="module")
def vertex_pool(mesh):
    """The emulator and a worker process serving the vertex pool (vertex is in the test
    mesh's ROUTING_PROVIDERS)."""
    require_route(mesh, "vertex")
    srv = EmulatorServer("vertex", free_port(), api_key=TOKEN).start()
    instance = start_worker(mesh, "vertex", VERTEX_ACCESS_TOKEN=TOKEN, VERTEX_PROJECT=PROJECT,
                            VERTEX_BASE_URL=f"{srv.url}/v1", **FAST_RETRIES)
    yield srv
    mesh.stop(instance)
    srv.stop()


@pytest.fixture(scope="module")
def admin(mesh):
    with admin_client(mesh) as client:
        yield client


async def test_mesh_imagen_4_is_charged_on_success_refunded_on_refusal_and_retried(
    vertex_pool, admin, edge_url
) -> None:
    reset(vertex_pool, fail_first=1, fail_status=429)
    key = funded_key(admin, "pro", tokens=20)
    async with httpx.AsyncClient(base_url=edge_url, headers={"Authorization": f"Bearer {key.secret}"}, timeout=60) as http:
        r = await http.post("/api/v2/generate", json={"model": "imagen-4", "prompt": "a harbour at dawn",
                                                      "size": "1408x768", "n": 2, "format": "png"})
        assert r.status_code == 200, r.text
        done = await wait_finished(http, r.json()["id"])
        assert (done["status"], done["tokens_spent"], done["cost_usd"]) == ("completed", 8, 0.08), done
        assert opened(httpx.get(done["result_url"]).content).size == (1408, 768)
        # One predict for both images, after the 429 was retried.
        [sent] = received(vertex_pool)
        assert sent["parameters"]["sampleCount"] == 2 and len(api_calls(vertex_pool)) == 2
        r = await http.post("/api/v2/generate", json={"model": "imagen-4", "prompt": f"a {REFUSED_WORD} harbour"})
        refused = await wait_finished(http, r.json()["id"])
        assert refused["status"] == "failed" and "content_policy_violation" in str(refused["error"]), refused
    ledger = await settled(admin, key.account_id)
    assert (ledger.balance.available_tokens, ledger.balance.reserved_tokens) == (12, 0)
    assert sorted(e.kind for e in ledger.entries) == ["capture", "credit", "release", "reserve", "reserve"]

"""Routes and faults through the real mesh: an upstream that is down sends the generation
to the model's next route (the worker reports, routing.attempts decides), every attempt is visible, and
the user is charged once; a refusal is final, with no retry and no charge."""

from __future__ import annotations

import httpx
import pytest

from tests.emulators.harness import EmulatorServer, REFUSED_WORD
from tests.support.polling import wait_finished
from tests.support.ports import free_port
from tests.support.provider_mesh import require_route, start_worker

KEY = "fallback-test-key"


@pytest.fixture(scope="module")
def flux_routes(mesh):
    """bfl (first route of the flux models) and replicate (second), each with a worker."""
    require_route(mesh, "bfl")
    require_route(mesh, "replicate")
    bfl = EmulatorServer("bfl", free_port(), api_key=KEY).start()
    replicate = EmulatorServer("replicate", free_port(), api_key=KEY).start()
    workers = [
        start_worker(mesh, "bfl", BFL_API_KEY=KEY, BFL_BASE_URL=bfl.url),
        start_worker(mesh, "replicate", REPLICATE_API_TOKEN=KEY, REPLICATE_BASE_URL=f"{replicate.url}/v1",
                     REPLICATE_PREFER_WAIT_SECONDS="1"),
    ]
    yield bfl, replicate
    for instance in workers:
        mesh.stop(instance)
    bfl.stop()
    replicate.stop()


def faults(server: EmulatorServer, **values) -> None:
    httpx.post(f"{server.url}/_emulator/reset").raise_for_status()
    httpx.post(f"{server.url}/_emulator/faults", json=values).raise_for_status()


def calls(server: EmulatorServer) -> list[dict]:
    return httpx.get(f"{server.url}/_emulator/calls").json()["calls"]


async def test_a_down_upstream_falls_back_to_the_next_route(flux_routes, http: httpx.AsyncClient) -> None:
    bfl, replicate = flux_routes
    faults(bfl, down=True)
    faults(replicate)
    r = await http.post("/api/v2/generate", json={"model": "flux-1.1-pro", "prompt": "a lighthouse", "size": "1024x1024"})
    assert r.status_code == 200, r.text
    done = await wait_finished(http, r.json()["id"], timeout=180)
    assert done["status"] == "completed", done
    tries = done["attempts"]
    assert [(a["attempt"], a["provider"]) for a in tries] == [(1, "bfl"), (2, "replicate")], tries
    assert tries[0]["error"]["code"] == "provider_unavailable" and tries[1]["error"] is None
    assert len(calls(bfl)) >= 2, "bfl was retried before the fallback"
    assert any(c["path"].endswith("/predictions") for c in calls(replicate))
    assert done["tokens_spent"] > 0 and len(done["result_urls"]) == 1


async def test_retry_then_success_stays_on_the_first_route(flux_routes, http: httpx.AsyncClient) -> None:
    bfl, replicate = flux_routes
    faults(bfl, fail_first=2, fail_status=503)
    faults(replicate)
    r = await http.post("/api/v2/generate", json={"model": "flux-1.1-pro", "prompt": "a harbour", "size": "1024x1024"})
    done = await wait_finished(http, r.json()["id"], timeout=180)
    assert done["status"] == "completed", done
    assert [a["provider"] for a in done["attempts"]] == ["bfl"]
    assert not calls(replicate)


async def test_a_refusal_is_final_and_free(flux_routes, http: httpx.AsyncClient) -> None:
    bfl, replicate = flux_routes
    faults(bfl)
    faults(replicate)
    r = await http.post("/api/v2/generate", json={"model": "flux-1.1-pro", "prompt": f"a {REFUSED_WORD} scene"})
    done = await wait_finished(http, r.json()["id"], timeout=180)
    assert done["status"] == "failed" and done["error"]["code"] == "content_policy_violation", done
    assert [a["provider"] for a in done["attempts"]] == ["bfl"]  # not sent to the next route
    assert not calls(replicate)
    assert done["tokens_spent"] == 0

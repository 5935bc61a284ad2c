"""Every catalog model, through every one of its routes, generates once against the emulators.

The cases are read from routing's catalog.yaml when the tests are collected: one per
(model, provider of its `providers`), one per alias, and the seeds' own examples. Each
provider runs as a `PinnedRoute` (tests/support/provider_mesh.py): a routing that enables
only that provider, its edge, and the provider's worker against its emulator, so each of a
model's routes is asked on its own and a failure cannot fall back to another one. The
generations go through `POST /api/v2/generate` with nothing but the model and a prompt (the
model's own defaults), all at once; each test then reads its own outcome.

A catalog entry that no adapter serves, or a route with no emulator below, fails here.
A new provider is one line of EMULATORS: its emulator (tests/emulators/<name>.py) and the
worker's variables, where `{url}` is the emulator's address and `{key}` its API key.
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image

from routing.catalog import Catalog, ModelEntry
from tests.emulators.harness import EmulatorServer
from tests.support.ports import free_port
from tests.support.provider_mesh import PinnedRoute

KEY = "catalog-test-key-7c1e"
PROMPT = "a lighthouse at dusk"
GENERATION_SECONDS = 60.0
STARTUP_SECONDS = 300.0


class Emulated:
    """A provider's upstream in these tests: its emulator and the worker's variables."""

    def __init__(self, emulator: str, **env: str) -> None:
        self.emulator = emulator
        self.env = env

    def worker_env(self, url: str) -> dict[str, str]:
        return {name: value.format(url=url, key=KEY) for name, value in self.env.items()}


# provider -> its emulated upstream; None: the mesh's own worker serves it (no upstream).
EMULATORS: dict[str, Emulated | None] = {
    "local": None,
    "openai": Emulated("openai", OPENAI_API_KEY="{key}", OPENAI_BASE_URL="{url}/v1"),
    "bfl": Emulated("bfl", BFL_API_KEY="{key}", BFL_BASE_URL="{url}"),
    "stability": Emulated("stability", STABILITY_API_KEY="{key}", STABILITY_BASE_URL="{url}"),
    "ideogram": Emulated("ideogram", IDEOGRAM_API_KEY="{key}", IDEOGRAM_BASE_URL="{url}"),
    "google": Emulated("google", GOOGLE_API_KEY="{key}", GOOGLE_BASE_URL="{url}/v1beta"),
    "midjourney": Emulated("midjourney", MIDJOURNEY_API_KEY="{key}", MIDJOURNEY_BASE_URL="{url}"),
    "replicate": Emulated("replicate", REPLICATE_API_TOKEN="{key}", REPLICATE_BASE_URL="{url}/v1",
                          REPLICATE_PREFER_WAIT_SECONDS="1"),
    "fal": Emulated("fal", FAL_KEY="{key}", FAL_BASE_URL="{url}"),
}


def catalog_models() -> list[ModelEntry]:
    """Every model of the bundled catalog, whatever this gateway enables."""
    return Catalog.load(set()).all


@dataclass(frozen=True)
class Case:
    """One generation: `name` (a model id or alias) on `provider`, expected to run `model`."""

    name: str
    model: str
    provider: str
    body: tuple[tuple[str, Any], ...] = ()  # more request fields than the model and prompt
    api: str = "/api/v2/generate"

    @property
    def id(self) -> str:
        extra = "".join(f",{k}={v}" for k, v in self.body)
        return f"{self.name}@{self.provider}{extra}{'' if self.api == '/api/v2/generate' else ',openai'}"

    @property
    def n(self) -> int:
        return dict(self.body).get("n", 1)


ROUTE_CASES = [Case(m.id, m.id, provider) for m in catalog_models() for provider in m.providers]
ALIAS_CASES = [Case(alias, m.id, m.providers[0]) for m in catalog_models() for alias in m.aliases]
# The seeds' own examples: seed 002 asks stable-diffusion-xl for n: 4 over the OpenAI API.
SEED_CASES = [
    Case("stable-diffusion-xl", "stable-diffusion-xl", provider, (("n", 4), ("size", "1024x1024")),
         "/v1/images/generations")
    for m in catalog_models() if m.id == "stable-diffusion-xl" for provider in m.providers
]
ALL_CASES = ROUTE_CASES + ALIAS_CASES + SEED_CASES


def missing_emulator(case: Case) -> str | None:
    if case.provider in EMULATORS:
        return None
    return (f"{case.name}: its route {case.provider!r} has no emulator in tests/test_catalog_models.py: add "
            f"{case.provider!r} to EMULATORS (its tests/emulators/ module and the worker's variables)")


@dataclass
class Route:
    """A provider's pinned route (with its emulator), or why it did not start."""

    pinned: PinnedRoute | None = None
    emulator: EmulatorServer | None = None
    problem: str = ""


@pytest.fixture(scope="module")
def routes(mesh):
    """Every provider of the catalog's routes that has an emulator, started at once."""
    providers = sorted({c.provider for c in ALL_CASES if c.provider in EMULATORS})
    started: dict[str, Route] = {}
    for provider in providers:
        emulated = EMULATORS[provider]
        route = Route()
        try:
            env = None
            if emulated is not None:
                route.emulator = EmulatorServer(emulated.emulator, free_port(), api_key=KEY).start()
                env = emulated.worker_env(route.emulator.url)
            route.pinned = PinnedRoute(mesh, provider, env, name="catalog").launch()
        except Exception as exc:  # noqa: BLE001 - reported by the provider's tests
            route.problem = f"could not start: {exc}"
        started[provider] = route
    # They all start at once, so the first wait takes most of the time on a busy machine.
    for route in started.values():
        if route.pinned is not None and not route.problem:
            try:
                route.pinned.wait(timeout=STARTUP_SECONDS)
            except RuntimeError as exc:
                route.problem = str(exc)
    yield started
    pinned = [r.pinned for r in started.values() if r.pinned is not None]
    with ThreadPoolExecutor(max_workers=8) as pool:  # each stop waits for its process's grace period
        list(pool.map(lambda p: [mesh.stop(instance) for instance in p.instances()], pinned))
    for route in started.values():
        if route.emulator is not None:
            route.emulator.stop()


async def read(http: httpx.AsyncClient, url: str) -> httpx.Response:
    """GET, again once when the server closed a kept-alive connection as it was reused."""
    try:
        return await http.get(url)
    except httpx.TransportError:
        await asyncio.sleep(0.5)
        return await http.get(url)


async def generate(http: httpx.AsyncClient, case: Case) -> dict:
    """The generation's final v2 object (its images fetched), or what went wrong."""
    try:
        return await generation_of(http, case)
    except httpx.HTTPError as exc:
        return {"problem": f"{type(exc).__name__}: {exc}"}


async def generation_of(http: httpx.AsyncClient, case: Case) -> dict:
    body = {"model": case.name, "prompt": PROMPT, **dict(case.body)}
    r = await http.post(case.api, json=body)
    if r.status_code != 200:
        return {"problem": f"{case.api} answered {r.status_code}: {r.text[:500]}"}
    generation_id = r.json()["id"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GENERATION_SECONDS
    while True:
        r = await read(http, f"/api/v2/generate/{generation_id}")
        if r.status_code != 200:
            return {"problem": f"GET /api/v2/generate/{generation_id} answered {r.status_code}: {r.text[:500]}"}
        final = r.json()
        if final["status"] != "pending":
            break
        if loop.time() > deadline:
            return {"problem": f"still {final['state']} after {GENERATION_SECONDS:.0f} s: {final}"}
        await asyncio.sleep(0.2)
    async with httpx.AsyncClient(timeout=30) as storage:  # presigned URLs: no API key
        final["image_bytes"] = [(await read(storage, url)).content for url in final["result_urls"]]
    return final


@pytest.fixture(scope="module")
async def outcomes(routes) -> dict[Case, dict]:
    """Every case's generation, all submitted at once."""
    runnable = [c for c in ALL_CASES if c.provider in routes and not routes[c.provider].problem]
    clients = {
        provider: httpx.AsyncClient(base_url=route.pinned.edge_url, timeout=60,
                                    headers={"Authorization": f"Bearer {route.pinned.mesh.api_key}"})
        for provider, route in routes.items() if route.pinned is not None and not route.problem
    }
    try:
        results = await asyncio.gather(*(generate(clients[c.provider], c) for c in runnable))
    finally:
        await asyncio.gather(*(client.aclose() for client in clients.values()))
    return dict(zip(runnable, results, strict=True))


def check(case: Case, routes: dict[str, Route], outcomes: dict[Case, dict]) -> None:
    where = f"{case.name} through {case.provider}"
    if problem := missing_emulator(case):
        pytest.fail(problem)
    if problem := routes[case.provider].problem:
        pytest.fail(f"{where}: the {case.provider} route {problem}")
    final = outcomes[case]
    assert "problem" not in final, f"{where}: {final.get('problem')}"
    assert final["status"] == "completed", f"{where} {final['status']}: {final['error']} (attempts {final['attempts']})"
    assert {a["provider"] for a in final["attempts"]} == {case.provider}, f"{where}: attempts {final['attempts']}"
    assert final["model_slug"] == final["perf"]["model_used"] == case.model, f"{where}: ran {final['model_slug']}"
    assert len(final["result_urls"]) == case.n, f"{where}: {len(final['result_urls'])} images, asked for {case.n}"
    metadata = final["result_metadata"]
    for data, info in zip(final["image_bytes"], metadata["images"], strict=True):
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            got = ((image.format or "").lower(), image.width, image.height)
        assert got == (metadata["format"], info["width"], info["height"]), f"{where}: stored image {got}, said {info}"


@pytest.mark.parametrize("case", ROUTE_CASES, ids=lambda c: c.id)
def test_every_model_generates_through_every_route(case: Case, routes, outcomes) -> None:
    check(case, routes, outcomes)


@pytest.mark.parametrize("case", ALIAS_CASES, ids=lambda c: c.id)
def test_an_alias_runs_the_model_it_names(case: Case, routes, outcomes) -> None:
    check(case, routes, outcomes)


@pytest.mark.parametrize("case", SEED_CASES, ids=lambda c: c.id)
def test_the_seeds_examples_work_as_written(case: Case, routes, outcomes) -> None:
    check(case, routes, outcomes)


def test_a_route_without_an_emulator_fails_naming_the_model_and_the_route() -> None:
    problem = missing_emulator(Case("some-model", "some-model", "no-such-provider"))
    assert problem and "some-model" in problem and "'no-such-provider'" in problem and "EMULATORS" in problem

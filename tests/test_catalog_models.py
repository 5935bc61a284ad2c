"""Every catalog model, through every one of its routes, generates once against the emulators.

The cases are read from routing's catalog.yaml when the tests are collected: one per
(model, provider of its `providers`), one per alias, and the seeds' own examples. Each
provider's worker runs against its emulator; the cases are spread over as few `Gateway`s
(tests/support/provider_mesh.py: a routing enabling some providers, and its edge) as can
be, so that in each a case's provider is the only route of its model there: every route
is asked on its own, and a failure cannot fall back to another one. The generations go
through `POST /api/v2/generate` with nothing but the model and a prompt (the model's own
defaults), all at once; each test then reads its own outcome.

A catalog entry that no adapter serves, or a route with no emulator below, fails here.
A new provider is one line of EMULATORS: its emulator (tests/emulators/<name>.py) and the
worker's variables, where `{url}` is the emulator's address and `{key}` its API key.
"""

from __future__ import annotations

import asyncio
import base64
import io
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image

from routing.catalog import Catalog, ModelEntry
from tests.emulators.harness import EmulatorServer
from tests.support.ports import free_port
from tests.support.provider_mesh import Gateway, launch_worker

KEY = "catalog-test-key-7c1e"
PROMPT = "a lighthouse at dusk"
GENERATION_SECONDS = 60.0
STARTUP_SECONDS = 300.0


class Emulated:
    """A provider's upstream in these tests: its emulator (`api_key`: the key it accepts, when
    not KEY alone) and the worker's variables."""

    def __init__(self, emulator: str, api_key: str = "{key}", **env: str) -> None:
        self.emulator = emulator
        self.api_key = api_key.format(key=KEY)
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
    "vertex": Emulated("vertex", VERTEX_ACCESS_TOKEN="{key}", VERTEX_PROJECT="catalog-project",
                       VERTEX_BASE_URL="{url}/v1"),
    "midjourney": Emulated("midjourney", MIDJOURNEY_API_KEY="{key}", MIDJOURNEY_BASE_URL="{url}"),
    "replicate": Emulated("replicate", REPLICATE_API_TOKEN="{key}", REPLICATE_BASE_URL="{url}/v1",
                          REPLICATE_PREFER_WAIT_SECONDS="1"),
    "fal": Emulated("fal", FAL_KEY="{key}", FAL_BASE_URL="{url}"),
    "kling": Emulated("kling", api_key="{key}-access:{key}-secret", KLING_ACCESS_KEY="{key}-access",
                      KLING_SECRET_KEY="{key}-secret", KLING_BASE_URL="{url}"),
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
        route = {"/api/v2/generate": "", "/v1/images/generations": ",openai", EDITS: ",edits", TRY_ON: ",try-on"}
        return f"{self.name}@{self.provider}{extra}{route[self.api]}"

    @property
    def n(self) -> int:
        return dict(self.body).get("n", 1)


EDITS = "/v1/images/edits"
TRY_ON = "/kling/v1/images/kolors-virtual-try-on"  # Kling's own task route: a person and a garment in


def route_api(m: ModelEntry) -> str:
    """Where a model is asked: one that makes images only from input images through the route
    that takes its inputs (one image on OpenAI's edits, try-on's two on Kling's route)."""
    if m.text_to_image:
        return "/api/v2/generate"
    assert m.edits is not None
    return TRY_ON if set(m.edits.roles) == {"person", "garment"} else EDITS


ROUTE_CASES = [Case(m.id, m.id, provider, api=route_api(m)) for m in catalog_models() for provider in m.providers]
ALIAS_CASES = [Case(alias, m.id, m.providers[0], api=route_api(m)) for m in catalog_models() for alias in m.aliases]
# Every model name of seed 004 (the perf API, docs/api-sources.md), as its OpenAI-shaped API is called.
SEED_004_NAMES = ("dall-e-3", "dall-e-2", "stable-diffusion-3", "flux-pro", "flux-dev", "ideogram-2", "imagen-3")


def named(name: str) -> ModelEntry:
    everything = Catalog.load({p for m in catalog_models() for p in m.providers})
    return everything.get(name)


# The seeds' own examples: seed 002 asks stable-diffusion-xl for n: 4 over the OpenAI API
# (through each of its routes), seed 004 uses its own names.
SEED_CASES = [
    Case("stable-diffusion-xl", "stable-diffusion-xl", provider, (("n", 4), ("size", "1024x1024")),
         "/v1/images/generations")
    for m in catalog_models() if m.id == "stable-diffusion-xl" for provider in m.providers
] + [Case(name, named(name).id, named(name).providers[0], (), "/v1/images/generations") for name in SEED_004_NAMES]
ALL_CASES = ROUTE_CASES + ALIAS_CASES + SEED_CASES


def missing_emulator(case: Case) -> str | None:
    if case.provider in EMULATORS:
        return None
    return (f"{case.name}: its route {case.provider!r} has no emulator in tests/test_catalog_models.py: add "
            f"{case.provider!r} to EMULATORS (its tests/emulators/ module and the worker's variables)")


def gateway_groups(cases: list[Case]) -> list[list[str]]:
    """The providers of each gateway the cases need, as few as can be: in each gateway,
    every case's provider is the only route of its model that the gateway enables, so
    that route (and no fallback) is the one asked. Cases whose route has no emulator are
    left out (they fail on their own)."""
    routes = {m.id: set(m.providers) for m in catalog_models()}
    groups: list[tuple[set[str], dict[str, str]]] = []  # (enabled providers, model -> the route asked)
    for case in cases:
        if case.provider not in EMULATORS:
            continue
        for enabled, asked in groups:
            trial, wanted = enabled | {case.provider}, {**asked, case.model: case.provider}
            if asked.get(case.model, case.provider) == case.provider and all(
                routes[model] & trial == {provider} for model, provider in wanted.items()
            ):
                enabled.add(case.provider)
                asked[case.model] = case.provider
                break
        else:
            groups.append(({case.provider}, {case.model: case.provider}))
    return [sorted(enabled) for enabled, _asked in groups]


GATEWAYS = gateway_groups(ALL_CASES)


def gateway_of(case: Case) -> int:
    return next(i for i, providers in enumerate(GATEWAYS) if case.provider in providers)


@dataclass
class Pools:
    """The gateways, each provider's emulator and worker, and why any did not start."""

    gateways: list[Gateway]
    emulators: dict[str, EmulatorServer]
    workers: dict[str, tuple[str, int]]
    problems: dict[str, str]  # provider -> what went wrong


@pytest.fixture(scope="module")
def pools(mesh):
    """Every gateway, emulator and worker the cases need, all started at once."""
    pools = Pools([], {}, {}, {})
    for provider in sorted({p for providers in GATEWAYS for p in providers}):
        emulated = EMULATORS[provider]
        if emulated is None:
            continue  # the mesh's own worker
        try:
            pools.emulators[provider] = EmulatorServer(emulated.emulator, free_port(), api_key=emulated.api_key).start()
            env = emulated.worker_env(pools.emulators[provider].url)
            pools.workers[provider] = launch_worker(mesh, provider, instance=f"catalog-worker-{provider}", **env)
        except Exception as exc:  # noqa: BLE001 - reported by the provider's cases
            pools.problems[provider] = f"could not start: {exc}"
    pools.gateways = [Gateway(mesh, providers, name=f"catalog-{i}").launch() for i, providers in enumerate(GATEWAYS)]
    # Everything starts at once, so the first wait takes most of the time on a busy machine.
    for gateway in pools.gateways:
        gateway.wait(timeout=STARTUP_SECONDS)
    for provider, (instance, port) in pools.workers.items():
        try:
            mesh.wait_serving(port, instance, timeout=STARTUP_SECONDS)
        except RuntimeError as exc:
            pools.problems[provider] = str(exc)
    yield pools
    instances = [instance for instance, _port in pools.workers.values()]
    instances += [instance for gateway in pools.gateways for instance in gateway.instances]
    with ThreadPoolExecutor(max_workers=8) as stopping:  # each stop waits for its process's grace period
        list(stopping.map(mesh.stop, instances))
        list(stopping.map(EmulatorServer.stop, pools.emulators.values()))


async def call(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """The request, again (twice at most) when the server closed a kept-alive connection as
    it was reused; submits carry an Idempotency-Key, so a repeated one is the same generation."""
    for attempt in range(3):
        try:
            return await http.request(method, url, **kwargs)
        except httpx.TransportError:
            if attempt == 2:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def generate(http: httpx.AsyncClient, case: Case) -> dict:
    """The generation's final v2 object (its images fetched), or what went wrong."""
    try:
        return await generation_of(http, case)
    except httpx.HTTPError as exc:
        return {"problem": f"{type(exc).__name__}: {exc}"}


def input_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (512, 512), (40, 90, 160)).save(out, "PNG")
    return out.getvalue()


async def submit(http: httpx.AsyncClient, case: Case) -> httpx.Response:
    """The case's request on its route (an input-only model's with a 512x512 input image)."""
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    if case.api == TRY_ON:
        image = base64.b64encode(input_png()).decode()
        body = {"model_name": case.name, "human_image": image, "cloth_image": image}
        return await call(http, "POST", case.api, json=body, headers=headers)
    if case.api == EDITS:
        edits = named(case.name).edits
        assert edits is not None
        form = {"model": case.name, **({"prompt": PROMPT} if edits.prompt else {})}
        files = {"image": ("input.png", input_png(), "image/png")}
        return await call(http, "POST", case.api, data=form, files=files, headers=headers)
    body = {"model": case.name, "prompt": PROMPT, **dict(case.body)}
    return await call(http, "POST", case.api, json=body, headers=headers)


async def generation_of(http: httpx.AsyncClient, case: Case) -> dict:
    r = await submit(http, case)
    if r.status_code != 200:
        return {"problem": f"{case.api} answered {r.status_code}: {r.text[:500]}"}
    answer = r.json()
    generation_id = answer["data"]["task_id"] if case.api == TRY_ON else answer["id"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GENERATION_SECONDS
    while True:
        r = await call(http, "GET", f"/api/v2/generate/{generation_id}")
        if r.status_code != 200:
            return {"problem": f"GET /api/v2/generate/{generation_id} answered {r.status_code}: {r.text[:500]}"}
        final = r.json()
        if final["status"] != "pending":
            break
        if loop.time() > deadline:
            return {"problem": f"still {final['state']} after {GENERATION_SECONDS:.0f} s: {final}"}
        await asyncio.sleep(0.2)
    final["answer"] = answer
    async with httpx.AsyncClient(timeout=30) as storage:  # presigned URLs: no API key
        final["image_bytes"] = [(await call(storage, "GET", url)).content for url in final["result_urls"]]
    return final


@pytest.fixture(scope="module")
async def outcomes(pools: Pools) -> dict[Case, dict]:
    """Every case's generation, all submitted at once."""
    runnable = [c for c in ALL_CASES if c.provider in EMULATORS and c.provider not in pools.problems]
    headers = {"Authorization": f"Bearer {pools.gateways[0].mesh.api_key}"}
    clients = [httpx.AsyncClient(base_url=g.edge_url, timeout=60, headers=headers) for g in pools.gateways]
    try:
        results = await asyncio.gather(*(generate(clients[gateway_of(c)], c) for c in runnable))
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    return dict(zip(runnable, results, strict=True))


def check(case: Case, pools: Pools, outcomes: dict[Case, dict]) -> None:
    where = f"{case.name} through {case.provider}"
    if problem := missing_emulator(case):
        pytest.fail(problem)
    if problem := pools.problems.get(case.provider):
        pytest.fail(f"{where}: the {case.provider} worker or emulator {problem}")
    final = outcomes[case]
    assert "problem" not in final, f"{where}: {final.get('problem')}"
    assert final["status"] == "completed", f"{where} {final['status']}: {final['error']} (attempts {final['attempts']})"
    assert {a["provider"] for a in final["attempts"]} == {case.provider}, f"{where}: attempts {final['attempts']}"
    assert final["model_slug"] == final["perf"]["model_used"] == case.model, f"{where}: ran {final['model_slug']}"
    if case.api in ("/v1/images/generations", EDITS):  # OpenAI's ImagesResponse names the model too
        answer = final["answer"]
        assert answer["model"] == answer["perf"]["model_used"] == case.model, f"{where}: answered {answer}"
        assert len(answer["data"]) == case.n, f"{where}: {len(answer['data'])} images in the answer"
    assert len(final["result_urls"]) == case.n, f"{where}: {len(final['result_urls'])} images, asked for {case.n}"
    metadata = final["result_metadata"]
    for data, info in zip(final["image_bytes"], metadata["images"], strict=True):
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            got = ((image.format or "").lower(), image.width, image.height)
        assert got == (metadata["format"], info["width"], info["height"]), f"{where}: stored image {got}, said {info}"


@pytest.mark.parametrize("case", ROUTE_CASES, ids=lambda c: c.id)
def test_every_model_generates_through_every_route(case: Case, pools, outcomes) -> None:
    check(case, pools, outcomes)


@pytest.mark.parametrize("case", ALIAS_CASES, ids=lambda c: c.id)
def test_an_alias_runs_the_model_it_names(case: Case, pools, outcomes) -> None:
    check(case, pools, outcomes)


@pytest.mark.parametrize("case", SEED_CASES, ids=lambda c: c.id)
def test_the_seeds_examples_work_as_written(case: Case, pools, outcomes) -> None:
    check(case, pools, outcomes)


def test_a_route_without_an_emulator_fails_naming_the_model_and_the_route() -> None:
    problem = missing_emulator(Case("some-model", "some-model", "no-such-provider"))
    assert problem and "some-model" in problem and "'no-such-provider'" in problem and "EMULATORS" in problem

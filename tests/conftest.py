"""The real mesh for integration and end-to-end tests.

One session starts Kafka (KRaft) and MinIO with the project's own scripts, and every
service as its own process, all on free ports in a temporary folder, with an OTLP sink
receiving the spans they export. Nothing here is mocked.
"""

from __future__ import annotations

import importlib.util
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.otlp_sink import OtlpSink
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("pixelmesh_local_mesh", ROOT / "deploy/local/mesh.py")
mesh_module = importlib.util.module_from_spec(_spec)
sys.modules["pixelmesh_local_mesh"] = mesh_module
_spec.loader.exec_module(mesh_module)
LocalMesh = mesh_module.LocalMesh
SELF_HOSTED = ROOT / "deploy/selfhosted"  # the example operator files (catalog, prices, ComfyUI workflows)


@pytest.fixture(scope="session")
def otlp_sink() -> Iterator[OtlpSink]:
    sink = OtlpSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster (deploy/local/postgres.sh) for the SQL stores' suites."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory, otlp_sink: OtlpSink) -> Iterator[LocalMesh]:
    ports = mesh_module.read_env_table()
    for key in list(ports):
        if key.endswith("_PORT"):
            ports[key] = str(free_port())
    # Every provider with an adapter is routable; a provider's worker starts when a test
    # needs it (tests/support/provider_mesh.py), until then its jobs wait in its topic.
    ports["ROUTING_PROVIDERS"] = "local,openai,bfl,stability,ideogram,google,midjourney,replicate,fal,comfyui,openai_compatible,sdapi,kling,vertex"
    other_key = "pm-other-" + secrets.token_urlsafe(16)
    m = LocalMesh(
        run_dir=tmp_path_factory.mktemp("mesh"),
        ports=ports,
        api_key="pm-test-" + secrets.token_urlsafe(16),
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_sink.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "SHUTDOWN_GRACE_SECONDS": "5",
            # The self-hosted pools' models, declared the way an operator declares them.
            "ROUTING_EXTRA_CATALOGS": str(SELF_HOSTED / "catalog.yaml"),
            "PRICING_EXTRA_PRICE_TABLES": str(SELF_HOSTED / "prices.yaml"),
        },
    )
    # A second account, so tests can check that one account never sees another's work.
    m.extra_env["PRICING_DEV_API_KEY"] = f"{m.api_key},{other_key}@acct_other"
    m.other_api_key = other_key
    try:
        m.up()
    except Exception:
        m.down()
        raise
    yield m
    m.down()
    leftovers = [p.stem for p in (m.run_dir / "pids").glob("*.pid")]
    assert not leftovers, f"processes left behind after down: {leftovers}"


@pytest.fixture(scope="session")
def edge_url(mesh: LocalMesh) -> str:
    return f"http://127.0.0.1:{mesh.ports['EDGE_HTTP_PORT']}"


@pytest.fixture(scope="session")
def api_key(mesh: LocalMesh) -> str:
    return mesh.api_key


@pytest.fixture(scope="session")
def other_api_key(mesh: LocalMesh) -> str:
    """A key of another account (acct_other)."""
    return mesh.other_api_key


@pytest.fixture
async def http(edge_url: str, api_key: str) -> Iterator[httpx.AsyncClient]:
    """A client whose submits answer at once (`Prefer: respond-async`), as the tests of
    running jobs need; POST /api/v2/generate's one-call answer is tested without it."""
    headers = {"Authorization": f"Bearer {api_key}", "Prefer": "respond-async"}
    async with httpx.AsyncClient(base_url=edge_url, headers=headers, timeout=60) as c:
        yield c

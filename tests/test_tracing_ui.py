"""The local tracing UI (deploy/local/tracing.sh): Zipkin fed over OTLP/HTTP.

Starts it for real on free ports in a temporary folder, exports spans with the same
OpenTelemetry SDK exporter the services use, and finds them through Zipkin's query API:
by trace id, and by the `pixelmesh.generation.id` tag a developer starts from.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.support.ports import free_port

# The first start fetches Zipkin's jar (about 135 MB) from Maven Central.
pytestmark = pytest.mark.timeout(1200)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy/local/tracing.sh"


class Tracing:
    def __init__(self, data_dir: Path) -> None:
        self.ui_port, self.otlp_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "TRACING_UI_PORT": str(self.ui_port),
            "TRACING_OTLP_PORT": str(self.otlp_port),
            "TRACING_DATA_DIR": str(data_dir),
        }
        self.ui = f"http://127.0.0.1:{self.ui_port}"
        self.otlp = f"http://127.0.0.1:{self.otlp_port}"

    def run(self, action: str, timeout: float = 1100) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), action], env=self.env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tracing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracing]:
    t = Tracing(tmp_path_factory.mktemp("tracing"))
    started = t.run("start")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield t
    finally:
        t.run("stop", timeout=60)


def wait_for(probe: Callable[[], object], timeout: float) -> object:
    """Poll until probe() returns something truthy (Zipkin indexes spans asynchronously)."""
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return result


def export(tracing: Tracing, service: str, generation_id: str) -> str:
    """A server span with a failing client child, exported like the services do; its trace id."""
    provider = TracerProvider(resource=Resource.create({"service.name": service, "pixelmesh.provider": "local"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{tracing.otlp}/v1/traces")))
    tracer = provider.get_tracer("tests.tracing")
    with tracer.start_as_current_span("POST /v1/images/generations", kind=SpanKind.SERVER) as server:
        server.set_attribute("pixelmesh.generation.id", generation_id)
        with tracer.start_as_current_span("/pixelmesh.routing.v1.RoutingService/SubmitGeneration", kind=SpanKind.CLIENT) as client:
            client.set_attribute("server.address", "10.1.2.3")
            client.set_attribute("server.port", 50051)
            client.add_event("retry", {"attempt": 2})
            client.set_status(Status(StatusCode.ERROR, "routing unavailable"))
        trace_id = format(server.get_span_context().trace_id, "032x")
    provider.shutdown()
    return trace_id


def test_status_reports_both_processes(tracing: Tracing) -> None:
    r = tracing.run("status")
    assert r.returncode == 0, r.stdout
    assert "zipkin: running" in r.stdout and "otlp-bridge: running" in r.stdout
    again = tracing.run("start")  # idempotent: the running instance is kept
    assert again.returncode == 0 and "pids" in again.stdout


def test_an_otlp_span_shows_up_in_the_query_api(tracing: Tracing) -> None:
    trace_id = export(tracing, "edge", "gen_TRACINGUI1")
    spans = wait_for(lambda: (r := httpx.get(f"{tracing.ui}/api/v2/trace/{trace_id}")).status_code == 200 and len(r.json()) == 2 and r.json(), timeout=20)
    server = next(s for s in spans if s.get("kind") == "SERVER")
    client = next(s for s in spans if s.get("kind") == "CLIENT")
    assert client["parentId"] == server["id"] and "parentId" not in server
    assert server["localEndpoint"] == {"serviceName": "edge"}
    assert server["tags"]["pixelmesh.generation.id"] == "gen_TRACINGUI1"
    assert server["tags"]["pixelmesh.provider"] == "local"  # resource attributes come along
    assert client["tags"]["error"] == "routing unavailable" and client["tags"]["otel.status_code"] == "ERROR"
    assert client["remoteEndpoint"] == {"ipv4": "10.1.2.3", "port": 50051}
    assert client["annotations"][0]["value"].startswith("retry")
    assert server["duration"] >= client["duration"] > 0


def test_a_generation_id_finds_its_trace(tracing: Tracing) -> None:
    trace_id = export(tracing, "edge", "gen_TRACINGUI2")
    query = {"annotationQuery": "pixelmesh.generation.id=gen_TRACINGUI2", "lookback": 3_600_000, "limit": 10}
    traces = wait_for(lambda: (r := httpx.get(f"{tracing.ui}/api/v2/traces", params=query)).status_code == 200 and r.json(), timeout=20)
    assert [t[0]["traceId"] for t in traces] == [trace_id]


def test_the_ui_is_served_and_the_bridge_refuses_what_it_cannot_read(tracing: Tracing) -> None:
    page = httpx.get(f"{tracing.ui}/zipkin/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    json_export = httpx.post(f"{tracing.otlp}/v1/traces", json={"resourceSpans": []})
    assert json_export.status_code == 415
    assert httpx.post(f"{tracing.otlp}/v1/traces", content=b"\xff\x00garbage", headers={"Content-Type": "application/x-protobuf"}).status_code == 400
    assert httpx.get(f"{tracing.otlp}/health").status_code == 200


def test_stop_stops_what_it_started(tracing: Tracing) -> None:
    """Last in the module: stops the shared instance (the fixture's own stop is then a no-op)."""
    data_dir = Path(tracing.env["TRACING_DATA_DIR"])
    pids = [int((data_dir / f).read_text()) for f in ("zipkin.pid", "bridge.pid")]
    assert tracing.run("stop", timeout=60).returncode == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    status = tracing.run("status")
    assert status.returncode == 3 and "not running" in status.stdout
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{tracing.otlp}/health")

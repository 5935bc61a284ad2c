"""The trace of a generation served by an upstream provider reaches the upstream HTTP call,
with OpenTelemetry semantic-convention names and pixelmesh.* attributes on the worker."""

from __future__ import annotations

import httpx
import pytest

from tests.emulators.harness import EmulatorServer
from tests.support.otlp_sink import OtlpSink
from tests.support.ports import free_port
from tests.support.provider_mesh import require_route, start_worker

KEY = "sk-test-trace-0123456789"


@pytest.fixture(scope="module")
def openai_upstream(mesh):
    require_route(mesh, "openai")
    srv = EmulatorServer("openai", free_port(), api_key=KEY).start()
    instance = start_worker(mesh, "openai", instance="worker-openai-trace", OPENAI_API_KEY=KEY,
                            OPENAI_BASE_URL=f"{srv.url}/v1")
    yield srv
    mesh.stop(instance)
    srv.stop()


def test_the_trace_reaches_the_upstream_call(openai_upstream: EmulatorServer, edge_url: str, api_key: str,
                                             otlp_sink: OtlpSink) -> None:
    r = httpx.post(
        f"{edge_url}/v1/images/generations",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": "dall-e-2", "prompt": "trace the upstream", "size": "256x256"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    generation_id = r.json()["perf"]["request_id"]
    upstream_host = openai_upstream.url.removeprefix("http://")

    def worker_process(spans):
        return [s for s in spans if s.service == "worker" and s.kind == "CONSUMER"
                and s.name == "process pixelmesh.generation.requests.openai"
                and s.attributes.get("pixelmesh.generation.id") == generation_id]

    def upstream_calls(spans, trace_id):
        return [s for s in spans if s.trace_id == trace_id and s.service == "worker" and s.kind == "CLIENT"
                and upstream_host in str(s.attributes.get("url.full", s.attributes.get("http.url", "")))]

    def complete(spans) -> bool:
        """Every span the assertions read has been exported (services flush in batches)."""
        found = worker_process(spans)
        if not found or not upstream_calls(spans, found[0].trace_id):
            return False
        ids = {s.span_id for s in spans}
        edge_served = any(s.trace_id == found[0].trace_id and s.service == "edge" and s.kind == "SERVER" for s in spans)
        return found[0].parent_span_id in ids and edge_served

    spans = otlp_sink.wait_for(complete)
    process = worker_process(spans)[0]
    mine = [s for s in spans if s.trace_id == process.trace_id]
    by_id = {s.span_id: s for s in mine}
    summary = sorted(f"{s.service}:{s.kind}:{s.name}" for s in mine)

    # The worker's consumer span carries the generation's identity (pixelmesh.* attributes)
    # and the messaging semantic conventions.
    assert process.attributes["pixelmesh.provider"] == "openai"
    assert process.attributes["pixelmesh.model"] == "dall-e-2"
    assert process.attributes["pixelmesh.attempt"] == 1
    assert process.attributes["messaging.system"] == "kafka"
    assert process.attributes["messaging.destination.name"] == "pixelmesh.generation.requests.openai"
    # ... and continues routing's producer span: edge -> routing -> Kafka -> worker is one trace.
    producer = by_id.get(process.parent_span_id)
    assert producer is not None and producer.service == "routing" and producer.kind == "PRODUCER", summary
    assert any(s.service == "edge" and s.kind == "SERVER" for s in mine), summary

    # worker -> upstream: the HTTP client span (http semantic conventions) is the job's child.
    calls = upstream_calls(spans, process.trace_id)
    assert calls, summary
    call = calls[0]
    assert by_id.get(call.parent_span_id) is process, summary
    method = call.attributes.get("http.request.method", call.attributes.get("http.method"))
    status = call.attributes.get("http.response.status_code", call.attributes.get("http.status_code"))
    assert method == "POST" and status == 200, call.attributes
    assert "/v1/images/generations" in str(call.attributes.get("url.full", call.attributes.get("http.url")))
    # The upstream key never rides on a span.
    assert all(KEY not in str(v) for s in mine for v in s.attributes.values())

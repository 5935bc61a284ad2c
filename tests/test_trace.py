"""One trace covers edge -> routing -> Kafka -> worker -> storage -> status (exported spans)."""

from __future__ import annotations

import httpx

from tests.support.otlp_sink import OtlpSink


def test_one_trace_spans_the_mesh(edge_url: str, api_key: str, otlp_sink: OtlpSink) -> None:
    r = httpx.post(
        f"{edge_url}/v1/images/generations",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": "pixelmesh-sketch", "prompt": "trace me", "size": "256x256"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    generation_id = r.json()["perf"]["request_id"]

    def edge_root(spans):
        return [s for s in spans if s.service == "edge" and s.kind == "SERVER" and s.attributes.get("pixelmesh.generation.id") == generation_id]

    spans = otlp_sink.wait_for(lambda s: bool(edge_root(s)))
    roots = edge_root(spans)
    assert roots, "the edge exported its request span"
    trace_id = roots[0].trace_id

    def complete(spans) -> bool:
        mine = [s for s in spans if s.trace_id == trace_id]
        services = {s.service for s in mine}
        stored = any(s.service == "storage" and s.kind == "SERVER" and "PutImage" in s.name for s in mine)
        status_read = any(s.service == "status" and s.kind == "CONSUMER" and s.name.startswith("process") for s in mine)
        return {"edge", "routing", "worker", "storage", "status", "pricing"} <= services and stored and status_read

    spans = [s for s in otlp_sink.wait_for(complete) if s.trace_id == trace_id]
    by_id = {s.span_id: s for s in spans}

    def parent(s):
        return by_id.get(s.parent_span_id)

    def edge_exists(child_pred, parent_pred) -> bool:
        return any(child_pred(s) and parent(s) is not None and parent_pred(parent(s)) for s in spans)

    summary = sorted(f"{s.service}:{s.kind}:{s.name}" for s in spans)
    # edge -> routing (gRPC client -> server)
    assert edge_exists(
        lambda s: s.service == "routing" and s.kind == "SERVER" and s.name.endswith("SubmitGeneration"),
        lambda p: p.service == "edge" and p.kind == "CLIENT",
    ), summary
    # routing -> pricing quote
    assert edge_exists(lambda s: s.service == "pricing" and s.kind == "SERVER", lambda p: p.service == "routing"), summary
    # routing -> Kafka -> worker: the worker's process span continues routing's producer span
    assert edge_exists(
        lambda s: s.service == "worker" and s.kind == "CONSUMER" and s.name == "process pixelmesh.generation.requests.local",
        lambda p: p.service == "routing" and p.kind == "PRODUCER",
    ), summary
    # worker -> storage
    assert edge_exists(
        lambda s: s.service == "storage" and s.kind == "SERVER" and "PutImage" in s.name,
        lambda p: p.service == "worker" and p.kind == "CLIENT",
    ), summary
    # worker -> Kafka -> status: the read model applies the worker's events in the same trace
    assert edge_exists(
        lambda s: s.service == "status" and s.kind == "CONSUMER" and s.name == "process pixelmesh.generation.events",
        lambda p: p.service == "worker" and p.kind == "PRODUCER",
    ), summary

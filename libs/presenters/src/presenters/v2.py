"""The /api/v2/generate generation object (the v2 API's fields and this gateway's), which
GET /api/v2/generate/{id}, its events and the webhooks of `callback_url` all carry."""

from __future__ import annotations

from pixelmesh.common.v1 import generation_pb2 as gen
from presenters.generation import KIND_NAMES, STATE_NAMES, TERMINAL, epoch_ms, error_of, iso, state_name, usd
from svckit import formats

# Webhook request headers (the status service sends them, the edge documents them).
WEBHOOK_TIMESTAMP_HEADER = "X-Pixelmesh-Timestamp"
# "v1=<hex HMAC-SHA256(secret, '<timestamp>.<body>')>"
WEBHOOK_SIGNATURE_HEADER = "X-Pixelmesh-Signature"
# "<generation id>.<state>": the same on every attempt, so receivers can drop repeats.
WEBHOOK_DELIVERY_HEADER = "X-Pixelmesh-Delivery"
WEBHOOK_ATTEMPT_HEADER = "X-Pixelmesh-Attempt"

# The v2 API's three statuses; `state` (below) tells queued from running and failed from cancelled.
V2_STATUS = {
    gen.GENERATION_STATE_QUEUED: "pending",
    gen.GENERATION_STATE_RUNNING: "pending",
    gen.GENERATION_STATE_SUCCEEDED: "completed",
    gen.GENERATION_STATE_FAILED: "failed",
    gen.GENERATION_STATE_CANCELLED: "failed",
}


def webhook_deliveries(generation: gen.Generation) -> list[dict]:
    return [
        {
            "attempt": d.number,
            "time": iso(d.time),
            "state": STATE_NAMES.get(d.state, ""),
            "status_code": d.status_code or None,
            "delivered": d.delivered,
            "error": d.error or None,
        }
        for d in generation.webhook_deliveries
    ]


def attempts(generation: gen.Generation) -> list[dict]:
    """Every try on every route (fallbacks add attempts), with the failure of each."""
    return [
        {
            "attempt": a.number,
            "provider": a.provider,
            "started_at": iso(a.start_time),
            "ended_at": iso(a.end_time),
            "error": {"code": a.error.code, "message": a.error.message} if a.error.code else None,
        }
        for a in generation.attempts
    ]


def v2_generation(generation: gen.Generation, urls: list[str]) -> dict:
    """The v2 API's generation object (id, status, model_slug, result_url, tokens_spent,
    result_metadata, seed, created_at, eta_seconds), plus the lifecycle `state`, progress,
    the error, every result URL, every attempt, webhook deliveries, and the perf API's `perf` block."""
    p = generation.params
    status = V2_STATUS.get(generation.state, "pending")
    terminal = generation.state in TERMINAL
    body: dict[str, object] = {
        "id": generation.id,
        "object": "generation",
        "status": status,
        "state": state_name(generation),
        "kind": KIND_NAMES.get(p.kind, "generate"),
        "model_slug": generation.model,
        "prompt": p.prompt,
        "negative_prompt": p.negative_prompt or None,
        "size": p.size or None,
        "n": p.n or 1,
        "quality": generation.quality or None,
        "style": p.style or None,
        "format": formats.of(generation.output_format).name,
        "seed": generation.seed,
        "created_at": iso(generation.create_time),
        "started_at": iso(generation.start_time),
        "completed_at": iso(generation.end_time) if terminal else None,
        "eta_seconds": None if terminal else generation.eta_seconds,
        "progress": 100.0 if status == "completed" else round(generation.progress_percent, 1),
        "result_url": urls[0] if urls and status == "completed" else None,
        "result_urls": list(urls) if status == "completed" else [],
        "tokens_spent": generation.cost.tokens if status == "completed" else 0,
        "cost_usd": usd(generation.cost.usd_micros) if status == "completed" else 0.0,
        "result_metadata": None,
        "error": None,
        "callback_url": p.callback_url or None,
        "webhook_deliveries": webhook_deliveries(generation),
        "attempts": attempts(generation),
    }
    if p.parent_generation_id:
        body["parent_generation_id"] = p.parent_generation_id
        body["action"] = p.action
    if generation.buttons:
        body["buttons"] = [{"custom_id": b.custom_id, "label": b.label, "emoji": b.emoji} for b in generation.buttons]
    if p.kind == gen.GENERATION_KIND_DESCRIBE:
        body["descriptions"] = list(generation.descriptions)
    if status == "completed":
        body["result_metadata"] = {
            "width": generation.width,
            "height": generation.height,
            "format": formats.of(generation.output_format).name,
            "images": [
                {
                    "url": u,
                    "width": r.width,
                    "height": r.height,
                    "bytes": r.size_bytes,
                    "sha256": r.sha256,
                    "revised_prompt": r.revised_prompt or None,
                }
                for u, r in zip(urls, generation.images, strict=True)
            ],
        }
        latency = epoch_ms(generation.end_time) or 0
        body["perf"] = {
            "request_id": generation.id,
            "model_used": generation.model,
            "size": f"{generation.width}x{generation.height}",
            "quality": generation.quality,
            "cost_usd": usd(generation.cost.usd_micros),
            "latency_ms": max(0, latency - (epoch_ms(generation.create_time) or latency)),
        }
    elif status == "failed":
        err = error_of(generation)
        body["error"] = {"code": err.code.value, "message": err.message}
    return body

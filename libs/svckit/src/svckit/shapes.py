"""The public JSON shapes of a generation, written once for every service that renders them.

The edge answers GET /api/v2/generate/{id} and /mj/task/{id}/fetch with them, and the
status service's webhook dispatcher POSTs the very same JSON. Pure functions: the caller
passes the image URLs (presigned by storage) in the order of `generation.images`.
"""

from __future__ import annotations

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit import formats
from svckit.errors import ErrorCode

# Webhook request headers (the status service sends them, the edge documents them).
WEBHOOK_TIMESTAMP_HEADER = "X-Pixelmesh-Timestamp"
# "v1=<hex HMAC-SHA256(secret, '<timestamp>.<body>')>"
WEBHOOK_SIGNATURE_HEADER = "X-Pixelmesh-Signature"
# "<generation id>.<state>": the same on every attempt, so receivers can drop repeats.
WEBHOOK_DELIVERY_HEADER = "X-Pixelmesh-Delivery"
WEBHOOK_ATTEMPT_HEADER = "X-Pixelmesh-Attempt"

TERMINAL = (gen.GENERATION_STATE_SUCCEEDED, gen.GENERATION_STATE_FAILED, gen.GENERATION_STATE_CANCELLED)

# Seed 000's three statuses; `state` (below) tells queued from running and failed from cancelled.
V2_STATUS = {
    gen.GENERATION_STATE_QUEUED: "pending",
    gen.GENERATION_STATE_RUNNING: "pending",
    gen.GENERATION_STATE_SUCCEEDED: "completed",
    gen.GENERATION_STATE_FAILED: "failed",
    gen.GENERATION_STATE_CANCELLED: "failed",
}
STATE_NAMES = {
    gen.GENERATION_STATE_QUEUED: "queued",
    gen.GENERATION_STATE_RUNNING: "running",
    gen.GENERATION_STATE_SUCCEEDED: "completed",
    gen.GENERATION_STATE_FAILED: "failed",
    gen.GENERATION_STATE_CANCELLED: "cancelled",
}
KIND_NAMES = {
    gen.GENERATION_KIND_UNSPECIFIED: "generate",
    gen.GENERATION_KIND_GENERATE: "generate",
    gen.GENERATION_KIND_EDIT: "edit",
    gen.GENERATION_KIND_VARIATION: "variation",
    gen.GENERATION_KIND_ACTION: "action",
    gen.GENERATION_KIND_BLEND: "blend",
    gen.GENERATION_KIND_DESCRIBE: "describe",
}


def state_name(generation: gen.Generation) -> str:
    return STATE_NAMES.get(generation.state, "queued")


def error_of(generation: gen.Generation) -> tuple[ErrorCode, str]:
    """The gateway error code and message of a failed or cancelled generation."""
    if generation.state == gen.GENERATION_STATE_CANCELLED:
        return ErrorCode.CANCELLED, generation.error.message or "The generation was cancelled."
    try:
        code = ErrorCode(generation.error.code)
    except ValueError:
        code = ErrorCode.INTERNAL
    return code, generation.error.message or "The generation failed."


def iso(ts) -> str | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_ms(ts) -> int | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def usd(cost: gen.Cost) -> float:
    return round(cost.usd_micros / 1_000_000, 6)


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
    """Seed 000's generation object (id, status, model_slug, result_url, tokens_spent,
    result_metadata, seed, created_at, eta_seconds), plus the lifecycle `state`, progress,
    the error, every result URL, every attempt, webhook deliveries, and seed 004's `perf` block."""
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
        "cost_usd": usd(generation.cost) if status == "completed" else 0.0,
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
            "cost_usd": usd(generation.cost),
            "latency_ms": max(0, latency - (epoch_ms(generation.create_time) or latency)),
        }
    elif status == "failed":
        code, message = error_of(generation)
        body["error"] = {"code": code.value, "message": message}
    return body


# ---- the Midjourney proxy task (novicezk / trueai midjourney-proxy `fetch` shape) ----------

MJ_STATUS = {
    gen.GENERATION_STATE_QUEUED: "SUBMITTED",
    gen.GENERATION_STATE_RUNNING: "IN_PROGRESS",
    gen.GENERATION_STATE_SUCCEEDED: "SUCCESS",
    gen.GENERATION_STATE_FAILED: "FAILURE",
    # trueai's own cancel fails the task ("FAILURE" + failReason); novicezk has no CANCEL.
    gen.GENERATION_STATE_CANCELLED: "FAILURE",
}
# Button custom ids (MJ::JOB::<verb>::<n>::<hash>) and the change API's names -> task action.
_ACTION_VERBS = (
    ("MJ::JOB::upsample::", "UPSCALE"),
    ("MJ::JOB::variation::", "VARIATION"),
    ("MJ::JOB::high_variation::", "VARIATION"),
    ("MJ::JOB::low_variation::", "VARIATION"),
    ("MJ::JOB::reroll::", "REROLL"),
    ("MJ::JOB::pan_", "PAN"),
    ("MJ::Inpaint::", "INPAINT"),
)


def mj_action(generation: gen.Generation) -> str:
    p = generation.params
    if p.kind == gen.GENERATION_KIND_BLEND:
        return "BLEND"
    if p.kind == gen.GENERATION_KIND_DESCRIBE:
        return "DESCRIBE"
    if p.kind == gen.GENERATION_KIND_EDIT:
        return "EDITS"
    if p.kind == gen.GENERATION_KIND_VARIATION:
        return "VARIATION"
    if p.kind != gen.GENERATION_KIND_ACTION:
        return "IMAGINE"
    action = p.action
    if action[:1] in ("U", "V") and action[1:].isdigit():
        return "UPSCALE" if action[0] == "U" else "VARIATION"
    if action.lower() in ("r", "reroll"):
        return "REROLL"
    for prefix, name in _ACTION_VERBS:
        if action.startswith(prefix):
            return name
    return "ACTION"


def mj_bot_type(model: str) -> str:
    return "NIJI_JOURNEY" if "niji" in model else "MID_JOURNEY"


def mj_description(generation: gen.Generation) -> str:
    """The proxies' `description`: the Discord command the task stands for."""
    p = generation.params
    action = mj_action(generation)
    if action == "BLEND":
        return f"/blend {generation.id} {len(p.input_images)}"
    if action == "DESCRIBE":
        mime = p.input_images[0].mime_type if p.input_images else "image/png"
        ext = formats.BY_NAME.get(mime.removeprefix("image/"), formats.DEFAULT).extension
        return f"/describe {generation.id}.{ext}"
    if p.kind == gen.GENERATION_KIND_ACTION:
        short = {"UPSCALE": "U", "VARIATION": "V"}.get(action)
        index = (
            p.action.split("::")[3] if p.action.startswith("MJ::JOB::") and p.action.count("::") >= 3 else p.action[1:]
        )
        suffix = f"{short}{index}" if short and index.isdigit() else ("R" if action == "REROLL" else p.action)
        return f"/up {p.parent_generation_id} {suffix}"
    return f"/imagine {p.prompt}"


def mj_task(generation: gen.Generation, urls: list[str]) -> dict:
    """A generation as a Midjourney proxy task (GET /mj/task/{id}/fetch, notifyHook body)."""
    p = generation.params
    state = generation.state
    done = state == gen.GENERATION_STATE_SUCCEEDED
    failed = state in (gen.GENERATION_STATE_FAILED, gen.GENERATION_STATE_CANCELLED)
    if done:
        progress = "100%"
    elif failed:
        progress = ""
    else:
        progress = f"{int(generation.progress_percent)}%"
    final_prompt = p.prompt
    if generation.images and generation.images[0].revised_prompt:
        final_prompt = generation.images[0].revised_prompt
    if p.kind == gen.GENERATION_KIND_DESCRIBE:
        final_prompt = "\n\n".join(generation.descriptions)
    properties: dict[str, object] = {"finalPrompt": final_prompt, "botType": mj_bot_type(generation.model)}
    if p.callback_url:
        properties["notifyHook"] = p.callback_url
    if p.kind == gen.GENERATION_KIND_DESCRIBE and generation.descriptions:
        properties["descriptions"] = list(generation.descriptions)
    failure = error_of(generation)[1] if failed else None
    return {
        "id": generation.id,
        "action": mj_action(generation),
        "status": MJ_STATUS.get(state, "NOT_START"),
        "prompt": p.prompt,
        "promptEn": p.prompt,
        "description": mj_description(generation),
        "state": p.client_state or None,
        "submitTime": epoch_ms(generation.create_time),
        "startTime": epoch_ms(generation.start_time),
        "finishTime": epoch_ms(generation.end_time) if done or failed else None,
        "progress": progress,
        "imageUrl": urls[0] if urls else None,
        "imageUrls": [{"url": u, "thumbnail": u} for u in urls],
        "failReason": failure,
        "properties": properties,
        "buttons": [
            {"customId": b.custom_id, "emoji": b.emoji, "label": b.label, "style": 2, "type": 2}
            for b in generation.buttons
        ],
        "botType": mj_bot_type(generation.model),
        "parentId": p.parent_generation_id or None,
        "seed": str(generation.seed) if generation.seed else None,
        "model": generation.model,
    }

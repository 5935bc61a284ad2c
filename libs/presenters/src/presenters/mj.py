"""A generation as a Midjourney proxy task (novicezk / trueai midjourney-proxy `fetch`
shape): GET /mj/task/{id}/fetch, list-by-condition, and the notifyHook webhook body."""

from __future__ import annotations

from pixelmesh.common.v1 import generation_pb2 as gen
from presenters.generation import epoch_ms, error_of
from svckit import formats

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
    failure = error_of(generation).message if failed else None
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

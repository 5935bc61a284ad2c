"""A generation as a Kling task (the aggregators' pass-through of Kling's API): the `data`
of GET /kling/v1/images/generations/{task_id} and /kolors-virtual-try-on/{task_id}, and
the callback_url body; `kling_envelope` wraps it as Kling answers, `{code, message,
request_id, data}`."""

from __future__ import annotations

from pixelmesh.common.v1 import generation_pb2 as gen
from presenters.generation import epoch_ms, error_of

KLING_STATUS = {
    gen.GENERATION_STATE_QUEUED: "submitted",
    gen.GENERATION_STATE_RUNNING: "processing",
    gen.GENERATION_STATE_SUCCEEDED: "succeed",
    gen.GENERATION_STATE_FAILED: "failed",
    gen.GENERATION_STATE_CANCELLED: "failed",
}


def kling_task(generation: gen.Generation, urls: list[str]) -> dict:
    """Kling's task object: task_status submitted | processing | succeed | failed (with
    task_status_msg), task_result.images[{index, url}] once it succeeded, times in ms."""
    status = KLING_STATUS.get(generation.state, "submitted")
    created = epoch_ms(generation.create_time) or 0
    task: dict = {
        "task_id": generation.id,
        "task_status": status,
        "task_status_msg": error_of(generation).message if status == "failed" else "",
        "task_info": {"external_task_id": generation.params.client_state},
        "created_at": created,
        "updated_at": epoch_ms(generation.update_time) or created,
    }
    if status == "succeed":
        task["task_result"] = {"images": [{"index": i, "url": url} for i, url in enumerate(urls)]}
        task["watermark_info"] = {"enabled": False}
        task["final_unit_deduction"] = str(generation.cost.tokens)  # gateway tokens, a string as Kling's units
    return task


def kling_envelope(data: object, request_id: str, code: int = 0, message: str = "SUCCEED") -> dict:
    """Kling's response envelope (`data` left out of an error, as Kling does)."""
    body: dict = {"code": code, "message": message, "request_id": request_id}
    if code == 0:
        body["data"] = data
    return body

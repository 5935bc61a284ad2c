from pixelmesh.common.v1 import generation_pb2 as gen
from presenters.v2 import v2_generation


def test_v2_object_of_each_end() -> None:
    g = gen.Generation(id="gen_x", model="m", state=gen.GENERATION_STATE_RUNNING, progress_percent=50.0, eta_seconds=9)
    g.cost.tokens = 3
    body = v2_generation(g, [])
    assert (body["status"], body["state"], body["progress"], body["eta_seconds"], body["tokens_spent"]) == (
        "pending",
        "running",
        50.0,
        9,
        0,
    )
    assert body["result_url"] is None and body["error"] is None and "perf" not in body

    g.state = gen.GENERATION_STATE_FAILED
    g.error.code, g.error.message = "content_policy_violation", "refused upstream"
    body = v2_generation(g, [])
    assert (body["status"], body["state"], body["eta_seconds"], body["tokens_spent"]) == ("failed", "failed", None, 0)
    assert body["error"] == {"code": "content_policy_violation", "message": "refused upstream"}

    g.state = gen.GENERATION_STATE_CANCELLED
    g.error.code = "cancelled"
    assert (v2_generation(g, [])["state"], v2_generation(g, [])["error"]["code"]) == ("cancelled", "cancelled")

    g.state = gen.GENERATION_STATE_FAILED
    g.error.code = "something new"
    assert v2_generation(g, [])["error"]["code"] == "internal_error"

    g.state = gen.GENERATION_STATE_SUCCEEDED
    g.images.add(object_key="k", width=4, height=4, size_bytes=10, sha256="ab")
    g.webhook_deliveries.add(number=1, status_code=200, delivered=True, state=gen.GENERATION_STATE_SUCCEEDED)
    body = v2_generation(g, ["https://u"])
    assert (body["status"], body["result_url"], body["result_urls"], body["tokens_spent"], body["progress"]) == (
        "completed",
        "https://u",
        ["https://u"],
        3,
        100.0,
    )
    assert body["webhook_deliveries"] == [
        {"attempt": 1, "time": None, "state": "completed", "status_code": 200, "delivered": True, "error": None}
    ]

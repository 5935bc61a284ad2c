import hashlib
import hmac

from pixelmesh.common.v1 import generation_pb2 as gen
from status.webhooks import RetryPolicy, attempts_of, secret_for, sign, webhook_json


def at(seconds: float) -> gen.WebhookDelivery:
    d = gen.WebhookDelivery(state=gen.GENERATION_STATE_SUCCEEDED)
    d.time.FromNanoseconds(int(seconds * 1e9))
    return d


def ended(seconds: float, state: int = gen.GENERATION_STATE_SUCCEEDED) -> gen.Generation:
    g = gen.Generation(id="gen_x", state=state, api_key_id="key_1")
    g.end_time.FromNanoseconds(int(seconds * 1e9))
    return g


def test_backoff_doubles_up_to_the_cap_inside_the_window() -> None:
    policy = RetryPolicy(window_seconds=100, first_delay=1, max_delay=8)
    assert [policy.delay_after(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]
    g = ended(1000)
    assert policy.next_attempt_at(g, [], now=1000.5) == 1000.5  # the first attempt at once
    assert policy.next_attempt_at(g, [at(1000.5)], now=1001) == 1001.5
    assert policy.next_attempt_at(g, [at(1000.5), at(1001.5)], now=1002) == 1003.5
    assert policy.next_attempt_at(g, [at(1000), at(1099)], now=1099.5) is None  # 1101 is past the window
    assert policy.next_attempt_at(ended(500), [], now=1000) is None  # ended too long ago


def test_secrets_differ_per_key_and_signatures_verify() -> None:
    a, b = secret_for("k" * 32, "key_a"), secret_for("k" * 32, "key_b")
    assert a.startswith("whsec_") and a != b and secret_for("k" * 32, "key_a") == a
    assert secret_for("other-signing-key", "key_a") != a
    body = b'{"id":"gen_x"}'
    expected = hmac.new(a.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(a, "1700000000", body) == f"v1={expected}"


def test_only_attempts_of_the_current_state_count() -> None:
    g = ended(10, gen.GENERATION_STATE_CANCELLED)
    g.webhook_deliveries.add(number=1, state=gen.GENERATION_STATE_SUCCEEDED)
    g.webhook_deliveries.add(number=1, state=gen.GENERATION_STATE_CANCELLED)
    assert [d.state for d in attempts_of(g)] == [gen.GENERATION_STATE_CANCELLED]


def test_the_body_follows_the_submitting_api() -> None:
    g = ended(10)
    g.params.prompt = "cat"
    g.images.add(object_key="days-7/gen_x/0.png", width=8, height=8)
    assert webhook_json(g, ["u"])["status"] == "completed"
    g.params.webhook_format = "mj"
    task = webhook_json(g, ["u"])
    assert task["status"] == "SUCCESS" and task["imageUrl"] == "u" and task["progress"] == "100%"
    g.params.webhook_format = "kling"
    g.params.client_state = "order-7"
    task = webhook_json(g, ["u"])
    assert (task["task_status"], task["task_result"]["images"], task["task_info"]) == (
        "succeed",
        [{"index": 0, "url": "u"}],
        {"external_task_id": "order-7"},
    )

import asyncio

import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from status.core import GenerationStore
from status.servicer import to_operation
from svckit.errors import GatewayError
from svckit.ids import new_generation_id


def state(gid: str, version: int, st: int = gen.GENERATION_STATE_RUNNING) -> gen.Generation:
    return gen.Generation(id=gid, version=version, state=st)


def test_only_newer_versions_apply_and_terminal_sticks() -> None:
    store = GenerationStore()
    gid = new_generation_id()
    assert store.apply(state(gid, 2))
    assert not store.apply(state(gid, 1))
    assert not store.apply(state(gid, 2))
    assert store.apply(state(gid, 5, gen.GENERATION_STATE_SUCCEEDED))
    assert not store.apply(state(gid, 9, gen.GENERATION_STATE_RUNNING))
    assert store.peek(gid).state == gen.GENERATION_STATE_SUCCEEDED


async def test_newer_than_wakes_on_change() -> None:
    store = GenerationStore()
    gid = new_generation_id()
    store.apply(state(gid, 1))
    waiter = asyncio.create_task(store.newer_than(gid, 1, timeout=5))
    await asyncio.sleep(0.01)
    store.apply(state(gid, 2))
    assert (await waiter).version == 2


async def test_recent_unknown_id_is_awaited_old_one_is_not_found() -> None:
    store = GenerationStore()
    gid = new_generation_id()
    getter = asyncio.create_task(store.get(gid))
    await asyncio.sleep(0.05)
    store.apply(state(gid, 1))
    assert (await getter).id == gid
    with pytest.raises(GatewayError):
        await store.get(new_generation_id(now_ms=1_000))


def test_operation_shapes() -> None:
    ok = to_operation(state("gen_x", 3, gen.GENERATION_STATE_SUCCEEDED))
    assert ok.done and ok.HasField("response") and ok.name == "generations/gen_x"
    failed = gen.Generation(id="gen_y", version=3, state=gen.GENERATION_STATE_FAILED)
    failed.error.code = "content_policy_violation"
    op = to_operation(failed)
    assert op.done and op.error.code == 3 and not op.HasField("response")
    assert not to_operation(state("gen_z", 1)).done


def test_a_cancel_behind_the_worker_ends_it_and_wakes_watchers() -> None:
    store = GenerationStore()
    gid = new_generation_id()
    assert store.apply(state(gid, 6))
    assert store.apply(state(gid, 2, gen.GENERATION_STATE_CANCELLED))
    kept = store.peek(gid)
    assert kept.state == gen.GENERATION_STATE_CANCELLED and kept.version == 7
    assert not store.apply(state(gid, 9, gen.GENERATION_STATE_SUCCEEDED))


def test_webhook_deliveries_are_shown_once_whichever_topic_is_read_first() -> None:
    store = GenerationStore()
    gid = new_generation_id()
    done = gen.GENERATION_STATE_SUCCEEDED
    first = gen.WebhookDelivery(number=1, state=done, status_code=500)
    second = gen.WebhookDelivery(number=2, state=done, status_code=200, delivered=True)
    store.apply_delivery(gid, first)  # read before its generation: kept for it
    store.apply(state(gid, 1))
    store.apply(state(gid, 4, done))  # a newer state keeps what was shown
    store.apply_delivery(gid, second)
    store.apply_delivery(gid, second)  # read twice (a replay): shown once
    shown = store.peek(gid)
    assert shown.state == done and shown.version == 4  # deliveries are no state: the version stays
    assert [(d.number, d.status_code, d.delivered) for d in shown.webhook_deliveries] == [
        (1, 500, False),
        (2, 200, True),
    ]

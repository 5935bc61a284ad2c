"""The midjourney adapter against the Midjourney proxy emulator, both flavours, over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import functools
import threading
import time

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.status.v1 import status_service_pb2
from svckit.accounts import ACCOUNT_METADATA
from svckit.errors import ErrorCode
from tests.emulators import midjourney as mj_emulator
from tests.emulators.harness import REFUSED_WORD, EmulatorServer
from tests.support.ports import free_port
from tests.support.polling import wait_finished
from tests.support.provider_mesh import cancel, dispatch, fetch, finished, queued, served_models, start_worker, store, wait_for
from tests.support.provider_jobs import (
    EMULATED_INPUTS, FAST_POLLS, FAST_RETRIES, Control, Recorder, failure, generation, image_info, png,
)
from worker.providers import ProviderError
from worker.providers.midjourney import MidjourneyProvider, MidjourneySettings

KEY = "mj-secret-7d41"
FLAVORS = ("novicezk", "trueai")


@pytest.fixture(scope="module")
def emulators():
    servers = {
        flavor: EmulatorServer("midjourney", free_port(), api_key=KEY,
                               create_app=functools.partial(mj_emulator.create_app, flavor=flavor)).start()
        for flavor in FLAVORS
    }
    servers["queue"] = EmulatorServer("midjourney", free_port(), api_key=KEY,
                                      create_app=functools.partial(mj_emulator.create_app, flavor="novicezk", max_queue=1)).start()
    yield servers
    for server in servers.values():
        server.stop()


class Parents:
    """The status service's GetGeneration, over parent generations the tests fill in."""

    def __init__(self) -> None:
        self.known: dict[str, gen.Generation] = {}

    async def GetGeneration(self, request, metadata, timeout: float):  # noqa: N802 (the stub's name)
        """As status answers: another account's generation is not found (svckit.accounts)."""
        known = self.known.get(request.generation_id)
        if known is None or dict(metadata).get(ACCOUNT_METADATA) != known.account_id:
            raise grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata())
        return status_service_pb2.GetGenerationResponse(generation=known)

    def succeeded(self, g: gen.Generation, upstream_id: str, buttons) -> gen.Generation:
        done = gen.Generation()
        done.CopyFrom(g)
        done.state = gen.GENERATION_STATE_SUCCEEDED
        done.attempts.add(number=1, provider="midjourney", upstream_id=upstream_id)
        done.buttons.extend(buttons)
        self.known[done.id] = done
        return done


def settings(url: str, flavor: str, key: str = KEY, **extra) -> MidjourneySettings:
    return MidjourneySettings(**{
        "MIDJOURNEY_BASE_URL": url,
        "MIDJOURNEY_API_KEY": key,
        "MIDJOURNEY_FLAVOR": flavor,
        **FAST_RETRIES, **EMULATED_INPUTS, **FAST_POLLS,
        **extra,
    })


@pytest.fixture(params=FLAVORS)
async def mj(request, emulators):
    flavor = request.param
    control = Control(emulators[flavor].url)
    control.reset()
    parents = Parents()
    provider = MidjourneyProvider.build(settings(emulators[flavor].url, flavor), status=parents)
    provider.flavor, provider.control, provider.parents, provider.server = flavor, control, parents, emulators[flavor]
    yield provider
    await provider.close()


def tasks(mj) -> list[dict]:
    return mj.control.get("/_emulator/midjourney/tasks")["tasks"]


async def imagine(mj, prompt="a castle on a hill", **kw):
    rec = Recorder()
    g = generation("midjourney-v6", prompt, size="1:1", **kw)
    result = await mj.generate(g, rec.progress)
    return g, rec, result


async def test_imagine_stores_the_grid_with_its_buttons(mj) -> None:
    mj.control.faults(job_seconds=0.5)
    g, rec, result = await imagine(mj)
    [image] = result.images
    assert image_info(image.data)[0] == "png" and image.output_format == gen.OUTPUT_FORMAT_PNG  # trueai sends webp
    assert image_info(image.data)[1:] == (512, 512)  # Midjourney's own grid size, not resized
    [task] = tasks(mj)
    assert rec.upstream_ids == [task["id"]]
    assert task["body"]["state"] == g.id
    labels = [b.label or b.emoji for b in result.buttons]
    assert labels == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]
    assert all(b.custom_id.startswith("MJ::JOB::") for b in result.buttons)
    assert len(rec.percents) >= 3 and rec.percents == sorted(rec.percents) and rec.percents[-1] == 100
    assert not result.descriptions


async def test_the_prompt_carries_the_resolved_parameters(mj) -> None:
    await mj.generate(generation("midjourney-v6", "a castle", size="16:9", width=1344, height=768, negative_prompt="fog,  rain"),
                      Recorder().progress)
    assert tasks(mj)[0]["body"]["prompt"] == "a castle --ar 16:9 --no fog, rain --seed 42 --v 6"
    mj.control.reset()
    await mj.generate(generation("midjourney-v6", "a castle --ar 2:3 --v 7", size="16:9"), Recorder().progress)
    assert tasks(mj)[0]["body"]["prompt"] == "a castle --ar 2:3 --v 7 --seed 42"


async def test_turbo_is_the_turbo_mode_of_each_flavour(mj) -> None:
    await mj.generate(generation("midjourney-turbo", "a castle", size="1:1"), Recorder().progress)
    [task] = tasks(mj)
    if mj.flavor == "trueai":
        assert task["path"] == "/mj-turbo/mj/submit/imagine" and "--turbo" not in task["body"]["prompt"]
    else:
        assert task["path"] == "/mj/submit/imagine" and task["body"]["prompt"].endswith("--turbo")


def options(**values) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct


async def test_v7_asks_for_version_7_with_draft_and_an_omni_reference_by_url(mj) -> None:
    url = mj.server.state.host_file(png(120, 80))
    g = generation("midjourney-v7", "a knight in the rain", size="16:9", width=1344, height=768, image_url=url,
                   provider_options=options(draft=True, omni_weight=250, exp=20))
    result = await mj.generate(g, Recorder().progress)
    [task] = tasks(mj)
    # The emulator fails a V7 parameter without --v 7, and an --oref it cannot download.
    assert task["body"]["prompt"] == f"a knight in the rain --oref {url} --draft --exp 20 --ow 250 --ar 16:9 --seed 42 --v 7"
    assert "base64Array" not in task["body"] and len(result.images) == 1
    assert mj.control.get("/_emulator/midjourney/tasks")["uploaded"] == []  # a public URL is used as it is


async def test_v7_image_prompts_go_in_base64array_beside_the_omni_reference(mj) -> None:
    refs = [gen.InputImage(url="data:image/png;base64," + base64.b64encode(png(64, 64, c)).decode(), role="image")
            for c in ((10, 20, 30), (30, 20, 10))]
    url = mj.server.state.host_file(png())
    await mj.generate(generation("midjourney-v7", "a castle", image_url=url, input_images=refs), Recorder().progress)
    body = tasks(mj)[0]["body"]
    assert len(body["base64Array"]) == 2 and f"--oref {url}" in body["prompt"]


async def test_an_omni_reference_that_is_no_public_url_is_uploaded_on_trueai_and_refused_on_novicezk(mj) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(png(100, 100)).decode()
    g = generation("midjourney-v7", "a portrait", image_url=data_url)
    if mj.flavor == "novicezk":
        err = await failure(mj, g)
        assert err.code is ErrorCode.INVALID_REQUEST and "public http(s) image_url" in err.message and not err.retryable
        assert tasks(mj) == []
        return
    await mj.generate(g, Recorder().progress)
    listing = mj.control.get("/_emulator/midjourney/tasks")
    [uploaded] = listing["uploaded"]
    assert f"--oref {uploaded} " in listing["tasks"][0]["body"]["prompt"]


async def test_an_upload_the_proxy_refuses_is_the_clients_error() -> None:
    server = EmulatorServer("midjourney", free_port(), api_key=KEY,
                            create_app=functools.partial(mj_emulator.create_app, flavor="trueai", uploads=False)).start()
    provider = MidjourneyProvider.build(settings(server.url, "trueai"))
    try:
        data_url = "data:image/png;base64," + base64.b64encode(png()).decode()
        err = await failure(provider, generation("midjourney-v7", "a portrait", image_url=data_url))
    finally:
        await provider.close()
        server.stop()
    assert err.code is ErrorCode.INVALID_REQUEST and "EnableUserCustomUploadBase64" in err.message


async def test_an_omni_weight_without_a_reference_is_refused_before_any_call(mj) -> None:
    err = await failure(mj, generation("midjourney-v7", "a castle", provider_options=options(omni_weight=100)))
    assert err.code is ErrorCode.INVALID_REQUEST and "omni reference" in err.message
    assert tasks(mj) == []


async def test_v7_upscales_get_the_subtle_and_creative_2x_buttons_on_trueai(mj) -> None:
    grid_gen = generation("midjourney-v7", "a lighthouse", size="1:1")
    grid_rec = Recorder()
    grid = await mj.generate(grid_gen, grid_rec.progress)
    parent = mj.parents.succeeded(grid_gen, grid_rec.upstream_ids[-1], grid.buttons)
    up_gen = generation("midjourney-v7", "", kind=gen.GENERATION_KIND_ACTION, parent_generation_id=parent.id, action="U1")
    up_rec = Recorder()
    upscaled = await mj.generate(up_gen, up_rec.progress)
    if mj.flavor == "novicezk":
        assert upscaled.buttons == []  # novicezk has no /action: V7's upscale buttons cannot be pressed
        return
    assert [b.label for b in upscaled.buttons] == ["Upscale (Subtle)", "Upscale (Creative)", "Vary (Subtle)", "Vary (Strong)"]
    creative = upscaled.buttons[1].custom_id
    assert creative.startswith("MJ::JOB::upsample_v7_2x_creative::1::")
    up_parent = mj.parents.succeeded(up_gen, up_rec.upstream_ids[-1], upscaled.buttons)
    twice = generation("midjourney-v7", "", kind=gen.GENERATION_KIND_ACTION, parent_generation_id=up_parent.id,
                       action=creative)
    result = await mj.generate(twice, Recorder().progress)
    assert tasks(mj)[-1]["body"]["customId"] == creative
    assert image_info(result.images[0].data)[1:] == (512, 512)  # twice the 256 px upscale


@pytest.mark.parametrize("action", ["U2", "MJ::JOB::upsample::2::{hash}"])
async def test_upscale_a_quarter_of_the_parent(mj, action) -> None:
    parent_gen, rec, parent_result = await imagine(mj)
    parent = mj.parents.succeeded(parent_gen, rec.upstream_ids[-1], parent_result.buttons)
    hash_ = parent_result.buttons[0].custom_id.split("::")[4]
    child = generation("midjourney-v6", "", size="1:1", kind=gen.GENERATION_KIND_ACTION,
                       parent_generation_id=parent.id, action=action.format(hash=hash_))
    result = await mj.generate(child, Recorder().progress)
    assert len(result.images) == 1 and image_info(result.images[0].data)[1:] == (256, 256)
    sent = tasks(mj)[-1]
    assert sent["action"] == "UPSCALE" and sent["parent"] == rec.upstream_ids[-1] and sent["index"] == 2
    if mj.flavor == "trueai":
        assert sent["path"] == "/mj/submit/action" and sent["body"]["customId"] == parent_result.buttons[1].custom_id
        assert [b.label for b in result.buttons] == ["Upscale (Subtle)", "Vary (Subtle)", "Vary (Strong)"]
    else:
        assert sent["path"] == "/mj/submit/change" and sent["body"]["action"] == "UPSCALE" and sent["body"]["index"] == 2
        assert result.buttons == []  # novicezk changes grids only


@pytest.mark.parametrize(("action", "expected"), [("V3", ("VARIATION", 3)), ("reroll", ("REROLL", 0))])
async def test_variations_and_rerolls_make_new_grids(mj, action, expected) -> None:
    parent_gen, rec, parent_result = await imagine(mj)
    parent = mj.parents.succeeded(parent_gen, rec.upstream_ids[-1], parent_result.buttons)
    child = generation("midjourney-v6", "", kind=gen.GENERATION_KIND_ACTION, parent_generation_id=parent.id, action=action)
    result = await mj.generate(child, Recorder().progress)
    sent = tasks(mj)[-1]
    assert (sent["action"], sent["index"]) == expected
    assert len(result.buttons) == 9


async def test_buttons_of_upscales_are_trueai_only(mj) -> None:
    parent_gen, rec, parent_result = await imagine(mj)
    parent = mj.parents.succeeded(parent_gen, rec.upstream_ids[-1], parent_result.buttons)
    up_gen = generation("midjourney-v6", "", kind=gen.GENERATION_KIND_ACTION, parent_generation_id=parent.id, action="U1")
    up_rec = Recorder()
    upscaled = await mj.generate(up_gen, up_rec.progress)
    up_parent = mj.parents.succeeded(up_gen, up_rec.upstream_ids[-1], upscaled.buttons)
    strong = "MJ::JOB::high_variation::1::abc::SOLO" if mj.flavor == "novicezk" else upscaled.buttons[2].custom_id
    child = generation("midjourney-v6", "", kind=gen.GENERATION_KIND_ACTION, parent_generation_id=up_parent.id, action=strong)
    if mj.flavor == "novicezk":
        err = await failure(mj, child)
        assert err.code is ErrorCode.INVALID_REQUEST and "U1-U4" in err.message
    else:
        result = await mj.generate(child, Recorder().progress)
        assert tasks(mj)[-1]["action"] == "VARIATION" and len(result.buttons) == 9


async def test_actions_on_parents_that_cannot_take_them(mj) -> None:
    parent_gen, rec, parent_result = await imagine(mj)
    calls = len(mj.control.calls("POST"))

    def child(parent_id: str, action: str = "U1") -> gen.Generation:
        return generation("midjourney-v6", "", kind=gen.GENERATION_KIND_ACTION, parent_generation_id=parent_id, action=action)

    assert (await failure(mj, child("gen_unknown"))).code is ErrorCode.NOT_FOUND
    other = mj.parents.succeeded(parent_gen, rec.upstream_ids[-1], parent_result.buttons)
    other.account_id = "acct_other"
    assert (await failure(mj, child(other.id))).code is ErrorCode.NOT_FOUND
    running = gen.Generation(id="gen_running", account_id="acct_dev", state=gen.GENERATION_STATE_RUNNING)
    mj.parents.known[running.id] = running
    assert (await failure(mj, child(running.id))).code is ErrorCode.INVALID_REQUEST
    local = gen.Generation(id="gen_local", account_id="acct_dev", state=gen.GENERATION_STATE_SUCCEEDED)
    local.attempts.add(number=1, provider="local")
    mj.parents.known[local.id] = local
    assert (await failure(mj, child(local.id))).code is ErrorCode.INVALID_REQUEST
    assert (await failure(mj, child(""))).code is ErrorCode.INVALID_REQUEST
    assert len(mj.control.calls("POST")) == calls, "nothing reached the proxy"


async def test_a_parent_task_the_proxy_forgot_is_not_found(mj) -> None:
    parent_gen, rec, parent_result = await imagine(mj)
    parent = mj.parents.succeeded(parent_gen, rec.upstream_ids[-1], parent_result.buttons)
    mj.control.reset()  # the proxy lost its tasks (restart, expiry)
    child = generation("midjourney-v6", "", kind=gen.GENERATION_KIND_ACTION, parent_generation_id=parent.id, action="U1")
    err = await failure(mj, child)
    assert err.code is ErrorCode.NOT_FOUND and not err.retryable


async def test_blend(mj) -> None:
    images = [gen.InputImage(url=mj.server.state.host_file(png(80, 60, (i * 40, 90, 10))), role="image") for i in range(3)]
    g = generation("midjourney-v6", "", size="2:3", width=832, height=1248, kind=gen.GENERATION_KIND_BLEND, input_images=images)
    result = await mj.generate(g, Recorder().progress)
    [task] = tasks(mj)
    assert task["action"] == "BLEND" and task["body"]["dimensions"] == "PORTRAIT" and len(task["body"]["base64Array"]) == 3
    assert image_info(result.images[0].data)[1:] == (342, 512) and len(result.buttons) == 9
    one = generation("midjourney-v6", "", kind=gen.GENERATION_KIND_BLEND, input_images=images[:1])
    assert (await failure(mj, one)).code is ErrorCode.INVALID_REQUEST
    assert len(tasks(mj)) == 1


async def test_describe_gives_four_prompts_and_no_image(mj) -> None:
    url = mj.server.state.host_file(png(64, 64, (200, 30, 30)))
    g = generation("midjourney-v6", "", kind=gen.GENERATION_KIND_DESCRIBE, input_images=[gen.InputImage(url=url)])
    result = await mj.generate(g, Recorder().progress)
    assert result.images == [] and result.buttons == []
    [task] = tasks(mj)
    if mj.flavor == "trueai":
        assert task["body"] == {"link": url, "state": g.id}
        assert len(result.descriptions) == 4
    else:
        assert task["body"]["base64"].startswith("<data url")
        assert result.descriptions[0] == "a red square in soft light --ar 1:1"  # the image itself reached the proxy
    assert len(result.descriptions) == 4 and all("--ar 1:1" in d for d in result.descriptions)


async def test_describe_of_inline_base64(mj) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(png(32, 32, (200, 30, 30))).decode()
    g = generation("midjourney-v6", "", kind=gen.GENERATION_KIND_DESCRIBE, input_images=[gen.InputImage(url=data_url)])
    result = await mj.generate(g, Recorder().progress)
    assert result.descriptions[0].startswith("a red square")


async def test_banned_prompts_are_content_policy_without_retry(mj) -> None:
    err = await failure(mj, generation("midjourney-v6", f"a {REFUSED_WORD} thing", size="1:1"))
    assert err.code is ErrorCode.CONTENT_POLICY_VIOLATION and not err.retryable
    assert len(mj.control.calls("POST")) == 1
    if mj.flavor == "novicezk":
        assert REFUSED_WORD in err.message  # code 24 names the banned word


async def test_a_failed_task_is_a_retryable_provider_error(mj) -> None:
    err = await failure(mj, generation("midjourney-v6", "upstream-error now", size="1:1"))
    assert err.code is ErrorCode.PROVIDER_ERROR and err.retryable and "Discord interaction failed" in err.message


async def test_a_wrong_secret_is_the_operators_problem(mj) -> None:
    provider = MidjourneyProvider.build(settings(mj.server.url, mj.flavor, key="mj-wrong-secret-0a9e"), status=mj.parents)
    try:
        err = await failure(provider, generation("midjourney-v6", size="1:1"))
    finally:
        await provider.close()
    assert err.code is ErrorCode.PROVIDER_AUTH and "mj-wrong-secret-0a9e" not in err.message
    assert len(mj.control.calls()) == 1


async def test_5xx_then_success_and_down(mj) -> None:
    mj.control.faults(fail_first=2, fail_status=503)
    _, _, result = await imagine(mj)
    assert len(result.images) == 1 and len(mj.control.calls("POST")) == 3
    mj.control.faults(down=True)
    started = time.monotonic()
    err = await failure(mj, generation("midjourney-v6", size="1:1"))
    assert (err.code, err.retryable) == (ErrorCode.PROVIDER_UNAVAILABLE, True) and time.monotonic() - started < 5


async def test_cancel_reaches_trueai_and_is_a_no_op_on_novicezk(mj) -> None:
    mj.control.faults(job_seconds=30)
    rec = Recorder()
    job = asyncio.create_task(mj.generate(generation("midjourney-v6", size="1:1"), rec.progress))
    for _ in range(200):
        if rec.upstream_ids:
            break
        await asyncio.sleep(0.02)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    posts = len(mj.control.calls("POST"))
    await mj.cancel(rec.upstream_ids[0])
    if mj.flavor == "trueai":
        assert mj.control.calls("POST")[-1]["path"] == f"/mj/task/{rec.upstream_ids[0]}/cancel"
        assert tasks(mj)[0]["cancelled"]
    else:
        assert len(mj.control.calls("POST")) == posts  # novicezk has no cancel endpoint


async def test_a_job_past_its_timeout(mj) -> None:
    mj.control.faults(job_seconds=30)
    provider = MidjourneyProvider.build(settings(mj.server.url, mj.flavor, WORKER_JOB_TIMEOUT_SECONDS=0.4), status=mj.parents)
    try:
        err = await failure(provider, generation("midjourney-v6", size="1:1"))
    finally:
        await provider.close()
    assert (err.code, err.retryable) == (ErrorCode.TIMEOUT, True)
    assert tasks(mj)[0]["cancelled"] is (mj.flavor == "trueai")


async def test_a_task_the_proxy_loses_mid_job(mj) -> None:
    mj.control.faults(job_seconds=30)
    rec = Recorder()
    job = asyncio.create_task(mj.generate(generation("midjourney-v6", size="1:1"), rec.progress))
    while not rec.upstream_ids:
        await asyncio.sleep(0.02)
    mj.control.reset()
    with pytest.raises(ProviderError) as exc:
        await job
    assert exc.value.code is ErrorCode.PROVIDER_ERROR and "lost task" in exc.value.message


async def test_a_full_queue_is_waited_out(emulators) -> None:
    server = emulators["queue"]
    control = Control(server.url)
    control.reset()
    control.faults(job_seconds=0.4)
    provider = MidjourneyProvider.build(settings(server.url, "novicezk"))
    try:
        results = await asyncio.gather(*(provider.generate(generation("midjourney-v6", f"job {i}", size="1:1"), Recorder().progress)
                                         for i in range(2)))
        assert all(len(r.images) == 1 for r in results)
        assert len(control.calls("POST", "/mj/submit/imagine")) > 2  # code 23 answered, then retried
        control.reset()
        control.faults(job_seconds=30)
        await provider.submit(("", "/mj/submit/imagine", {"prompt": "holds the only slot"}))
        err = await failure(provider, generation("midjourney-v6", "waits in vain", size="1:1"))
        assert (err.code, err.retryable) == (ErrorCode.PROVIDER_UNAVAILABLE, True) and "queue is full" in err.message
    finally:
        await provider.close()


async def test_many_long_jobs_share_the_event_loop(emulators) -> None:
    """100 jobs of 1 s in flight at once: no thread per job, done far sooner than one by one."""
    server = emulators["novicezk"]
    Control(server.url).reset()
    Control(server.url).faults(job_seconds=1.0)
    provider = MidjourneyProvider.build(settings(server.url, "novicezk", WORKER_POLL_INTERVAL_SECONDS=0.2, WORKER_POLL_MAX_INTERVAL_SECONDS=0.5))
    peak = threading.active_count()
    try:
        started = time.monotonic()
        jobs = [asyncio.create_task(provider.generate(generation("midjourney-v6", f"job {i}", size="1:1"), Recorder().progress))
                for i in range(100)]
        while not all(j.done() for j in jobs):
            peak = max(peak, threading.active_count())
            await asyncio.sleep(0.05)
        results = [j.result() for j in jobs]
    finally:
        await provider.close()
    assert all(len(r.images) == 1 for r in results)
    assert peak < 50, f"{peak} threads for 100 jobs"
    assert time.monotonic() - started < 50, "one by one they take 100 s"


# ---- through the real mesh: Kafka, storage, status and a worker process for midjourney ----

@pytest.fixture(scope="module")
def mj_worker(mesh, emulators):
    instance = start_worker(mesh, "midjourney", MIDJOURNEY_API_KEY=KEY, MIDJOURNEY_BASE_URL=emulators["trueai"].url,
                            MIDJOURNEY_FLAVOR="trueai")
    yield instance
    mesh.stop(instance)


@pytest.fixture
def trueai(emulators) -> Control:
    control = Control(emulators["trueai"].url)
    control.reset()
    return control


async def test_mesh_imagine_then_press_a_button(mesh, mj_worker, trueai) -> None:
    parent = queued(generation("midjourney-v6", "a castle", size="1:1"), "midjourney")
    await dispatch(mesh, parent)
    done = await finished(mesh, parent.id)
    assert done.state == gen.GENERATION_STATE_SUCCEEDED, done
    [task] = trueai.get("/_emulator/midjourney/tasks")["tasks"]
    assert done.attempts[0].upstream_id == task["id"]
    assert [b.label or b.emoji for b in done.buttons][:5] == ["U1", "U2", "U3", "U4", "🔄"]
    assert image_info(await fetch(mesh, done.images[0].object_key)) == ("png", 512, 512)

    # The action's worker finds the parent's upstream task and buttons through status.
    child = queued(generation("midjourney-v6", "", size="1:1", kind=gen.GENERATION_KIND_ACTION,
                              parent_generation_id=parent.id, action="U3"), "midjourney")
    await dispatch(mesh, child)
    upscaled = await finished(mesh, child.id)
    assert upscaled.state == gen.GENERATION_STATE_SUCCEEDED, upscaled
    sent = trueai.get("/_emulator/midjourney/tasks")["tasks"][-1]
    assert (sent["action"], sent["parent"], sent["index"]) == ("UPSCALE", task["id"], 3)
    assert sent["body"]["customId"] == done.buttons[2].custom_id
    assert [b.label for b in upscaled.buttons] == ["Upscale (Subtle)", "Vary (Subtle)", "Vary (Strong)"]


async def test_mesh_describe_a_stored_image(mesh, mj_worker, trueai) -> None:
    g = queued(generation("midjourney-v6", "", kind=gen.GENERATION_KIND_DESCRIBE), "midjourney")
    key = await store(mesh, g.id, png(48, 48, (200, 30, 30)), index=900)
    g.params.input_images.add(object_key=key, role="image")
    await dispatch(mesh, g)
    done = await finished(mesh, g.id)
    assert done.state == gen.GENERATION_STATE_SUCCEEDED, done
    assert not done.images and len(done.descriptions) == 4
    assert done.descriptions[0].startswith("a red square")  # the stored bytes reached the proxy as base64


async def test_mesh_a_cancel_reaches_the_proxy(mesh, mj_worker, trueai) -> None:
    trueai.faults(job_seconds=60)
    g = queued(generation("midjourney-v6", "a slow castle", size="1:1"), "midjourney")
    await dispatch(mesh, g)
    running = await wait_for(mesh, g.id, lambda s: s.attempts and s.attempts[0].upstream_id)
    await cancel(mesh, g.id)
    for _ in range(100):
        if trueai.get("/_emulator/midjourney/tasks")["tasks"][0]["cancelled"]:
            break
        await asyncio.sleep(0.1)
    [task] = trueai.get("/_emulator/midjourney/tasks")["tasks"]
    assert task["cancelled"] and task["id"] == running.attempts[0].upstream_id


async def test_mesh_through_the_edge(mesh, mj_worker, trueai, http, edge_url, api_key) -> None:
    if "midjourney-v6" not in await served_models(edge_url, api_key):
        pytest.skip("routing does not serve midjourney yet: ROUTING_PROVIDERS must include midjourney")
    r = await http.post("/api/v2/generate", json={"model": "midjourney", "prompt": "a lighthouse", "size": "16:9"})
    assert r.status_code == 200, r.text
    body = await wait_finished(http, r.json()["id"])
    assert body["status"] == "completed", body
    assert trueai.get("/_emulator/midjourney/tasks")["tasks"][0]["body"]["prompt"].startswith("a lighthouse --ar 16:9 --seed ")

"""The kling adapter against the Kling emulator over real HTTP, then a worker in the real mesh."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from tests.emulators.harness import REFUSED_WORD
from tests.support.provider_jobs import (
    emulator_fixtures,
    EMULATED_INPUTS, FAST_POLLS, FAST_RETRIES, Control, Recorder, failure, generation, image_info, png,
)
from tests.support.provider_mesh import cancel, dispatch, fetch, finished, queued, start_worker, store, wait_for
from worker.providers.kling import KlingProvider, KlingSettings, KlingToken, sign_token

ACCESS, SECRET = "ak-7f3e21", "sk-kling-4b9d0c"


emulator, control = emulator_fixtures("kling", f"{ACCESS}:{SECRET}")


def settings(url: str, access: str = ACCESS, secret: str = SECRET, **extra) -> KlingSettings:
    return KlingSettings(**{
        "KLING_ACCESS_KEY": access, "KLING_SECRET_KEY": secret, "KLING_BASE_URL": url,
        **FAST_RETRIES, **EMULATED_INPUTS, **FAST_POLLS, **extra,
    })


@pytest.fixture
async def kling(emulator, control):
    provider = KlingProvider.build(settings(emulator.url))
    yield provider
    await provider.close()


def tasks(control: Control) -> list[dict]:
    return control.get("/_emulator/kling/tasks")["tasks"]


def options(control: Control, **values) -> None:
    import httpx

    httpx.post(f"{control.url}/_emulator/kling/options", json=values).raise_for_status()


def b64url(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_the_token_is_kling_s_jwt() -> None:
    token = sign_token(ACCESS, SECRET, 1_800_000_000)
    head, claims, _sig = token.split(".")
    assert b64url(head) == {"alg": "HS256", "typ": "JWT"}
    assert b64url(claims) == {"iss": ACCESS, "exp": 1_800_000_000 + 1800, "nbf": 1_800_000_000 - 5}
    clock = [1_800_000_000.0]
    auth = KlingToken(ACCESS, SECRET, clock=lambda: clock[0])
    first = auth.token()
    clock[0] += 60
    assert auth.token() == first, "cached while it is valid"
    clock[0] += 1500  # within five minutes of its expiry
    assert auth.token() != first


@pytest.mark.parametrize(("model", "size", "ratio"), [
    ("kling-v1", "1024x1024", "1:1"), ("kling-v1-5", "16:9", "16:9"), ("kling-v2", "4:3", "4:3"),
    ("kling-v2-1", "21:9", "21:9"), ("kling-v1", "21:9", "16:9"),
])
async def test_text_to_image_makes_n_images_in_one_task(kling, control, model, size, ratio) -> None:
    control.faults(job_seconds=0.3)
    rec = Recorder()
    result = await kling.generate(generation(model, size=size, n=3, negative_prompt="blur"), rec.progress)
    [task] = tasks(control)
    assert task["body"] == {"model_name": model, "prompt": "a lighthouse at dusk", "n": 3, "negative_prompt": "blur",
                            "aspect_ratio": ratio}
    assert rec.upstream_ids == [task["id"]] and rec.percents[-1] == 100
    assert len(result.images) == 3 and all(image_info(i.data)[0] == "png" for i in result.images)
    assert len({i.data for i in result.images}) == 3
    assert all(c["authorized"] for c in control.calls())


async def test_image_to_image_with_a_subject_reference_and_fidelities(kling, control, emulator) -> None:
    url = emulator.state.host_file(png(600, 400))
    g = generation("kling-v1-5", "the same person on a beach", size="auto", image_fidelity=0.7, human_fidelity=0.25,
                   kind=gen.GENERATION_KIND_EDIT, input_images=[gen.InputImage(url=url, role="subject")])
    result = await kling.generate(g, Recorder().progress)
    body = tasks(control)[0]["body"]
    assert body["image"].startswith("<image ") and body["image_reference"] == "subject"
    assert (body["image_fidelity"], body["human_fidelity"], body["aspect_ratio"]) == (0.7, 0.25, "3:2")
    assert image_info(result.images[0].data) == ("png", 1248, 832)


async def test_a_plain_image_is_a_subject_reference_on_v1_5_and_a_whole_image_one_on_v1(kling, control) -> None:
    data_url = "data:image/webp;base64,"
    from PIL import Image
    import io

    out = io.BytesIO()
    Image.new("RGB", (320, 320), (1, 2, 3)).save(out, "WEBP")
    data_url += base64.b64encode(out.getvalue()).decode()
    await kling.generate(generation("kling-v1-5", image_url=data_url), Recorder().progress)
    await kling.generate(generation("kling-v1", image_url=data_url), Recorder().progress)
    first, second = (t["body"] for t in tasks(control))
    assert first["image_reference"] == "subject" and "image_reference" not in second
    assert first["image"].startswith("<image "), "webp converted to png, sent as base64 without a data: prefix"


async def test_2k_text_to_image_on_kling_v2(kling, control, emulator) -> None:
    g = generation("kling-v2", size="16:9")
    g.params.provider_options.update({"resolution": "2k"})
    result = await kling.generate(g, Recorder().progress)
    assert tasks(control)[0]["body"]["resolution"] == "2k"
    assert image_info(result.images[0].data) == ("png", 2 * 1280, 2 * 720)  # twice the 1k sides
    g = generation("kling-v2", image_url=emulator.state.host_file(png(400, 400)))
    g.params.provider_options.update({"resolution": "2k"})
    err = await failure(kling, g)
    assert err.code is ErrorCode.INVALID_REQUEST and "from text only" in err.message


async def test_kling_v2_new_restyles_at_the_input_size(kling, control, emulator) -> None:
    url = emulator.state.host_file(png(640, 480))
    g = generation("kling-v2-new", "as a watercolour", size="auto", kind=gen.GENERATION_KIND_EDIT,
                   input_images=[gen.InputImage(url=url)])
    result = await kling.generate(g, Recorder().progress)
    body = tasks(control)[0]["body"]
    assert body["model_name"] == "kling-v2-new" and "image_reference" not in body
    assert image_info(result.images[0].data) == ("png", 640, 480)
    err = await failure(kling, generation("kling-v2-new", "no image"))
    assert err.code is ErrorCode.INVALID_REQUEST and "restyles an input image" in err.message


async def test_inputs_kling_would_refuse_are_the_clients_errors(kling, control, emulator) -> None:
    small = emulator.state.host_file(png(200, 640))
    err = await failure(kling, generation("kling-v2", image_url=small))
    assert err.code is ErrorCode.INVALID_REQUEST and "300 px" in err.message
    wide = emulator.state.host_file(png(1200, 300))
    err = await failure(kling, generation("kling-v2", image_url=wide))
    assert err.code is ErrorCode.INVALID_REQUEST and "1:2.5" in err.message
    err = await failure(kling, generation("kling-v2", image_fidelity=0.5, image_url=emulator.state.host_file(png(400, 400))))
    assert err.code is ErrorCode.INVALID_REQUEST and "image_fidelity" in err.message
    assert control.calls("POST") == []


async def test_virtual_try_on_sends_the_person_and_the_garment(kling, control, emulator) -> None:
    person, garment = emulator.state.host_file(png(480, 720, (9, 9, 9))), emulator.state.host_file(png(400, 400))
    g = generation("kolors-virtual-try-on-v1-5", "", size="auto", kind=gen.GENERATION_KIND_EDIT, input_images=[
        gen.InputImage(url=garment, role="garment"), gen.InputImage(url=person, role="person")])
    result = await kling.generate(g, Recorder().progress)
    [task] = tasks(control)
    assert task["kind"] == "kolors-virtual-try-on"
    assert set(task["body"]) == {"model_name", "human_image", "cloth_image"}
    assert task["body"]["model_name"] == "kolors-virtual-try-on-v1-5"
    assert image_info(result.images[0].data) == ("png", 480, 720), "the person's size"
    assert control.calls("GET", "/v1/images/kolors-virtual-try-on/")


async def test_try_on_without_a_garment(kling, control, emulator) -> None:
    g = generation("kolors-virtual-try-on-v1", "", kind=gen.GENERATION_KIND_EDIT,
                   input_images=[gen.InputImage(url=emulator.state.host_file(png(400, 400)), role="person")])
    err = await failure(kling, g)
    assert err.code is ErrorCode.INVALID_REQUEST and "garment" in err.message


async def test_a_refused_prompt_and_a_refused_result_are_content_policy(kling, control) -> None:
    err = await failure(kling, generation("kling-v2", f"a {REFUSED_WORD} scene"))
    assert (err.code, err.retryable) == (ErrorCode.CONTENT_POLICY_VIOLATION, False) and "1301" in err.message
    err = await failure(kling, generation("kling-v2", "unsafe-output please"))
    assert (err.code, err.retryable) == (ErrorCode.CONTENT_POLICY_VIOLATION, False) and "risk" in err.message
    err = await failure(kling, generation("kling-v2", "upstream-error"))
    assert (err.code, err.retryable) == (ErrorCode.PROVIDER_ERROR, True)


async def test_billing_429_is_the_operators_and_not_retried(kling, control) -> None:
    options(control, billing=True)
    err = await failure(kling, generation("kling-v2"))
    assert (err.code, err.retryable) == (ErrorCode.PROVIDER_AUTH, True) and "1102" in err.message
    assert len(control.calls("POST")) == 1


async def test_concurrency_429_is_backed_off_until_capacity_frees(emulator, control) -> None:
    control.faults(job_seconds=2)
    options(control, max_units=4)
    # Its own retry policy: the second submit's backoffs must outlast the first task (2 s).
    # Kling sends no Retry-After, so the jittered backoffs decide; from a 0.25 s base the
    # seven of them (caps 0.25 s .. 16 s) all but never sum under 2 s, as the suite's 0.05 s
    # base did in about one run of five.
    kling = KlingProvider.build(
        settings(emulator.url, WORKER_RETRY_BUDGET_SECONDS="40", WORKER_RETRY_BASE_SECONDS="0.25")
    )
    try:
        first = asyncio.create_task(kling.generate(generation("kling-v2", n=4), Recorder().progress))
        while not tasks(control):
            await asyncio.sleep(0.01)
        second = await kling.generate(generation("kling-v2", n=2), Recorder().progress)
        assert len(second.images) == 2 and len((await first).images) == 4
    finally:
        await kling.close()
    assert len(control.calls("POST")) >= 3, "the second submit was refused (1303) at least once, then retried"


async def test_injected_429_and_5xx_are_retried(kling, control) -> None:
    control.faults(fail_first=2, fail_status=429, retry_after=0.1)
    assert len((await kling.generate(generation("kling-v2"), Recorder().progress)).images) == 1
    control.reset()
    control.faults(fail_first=2, fail_status=503)
    assert len((await kling.generate(generation("kling-v2"), Recorder().progress)).images) == 1
    assert len(control.calls("POST")) == 3


async def test_a_down_upstream(kling, control) -> None:
    control.faults(down=True)
    started = time.monotonic()
    err = await failure(kling, generation("kling-v2"))
    assert (err.code, err.retryable) == (ErrorCode.PROVIDER_UNAVAILABLE, True) and time.monotonic() - started < 5


async def test_wrong_keys_are_the_operators_and_never_shown(emulator, control) -> None:
    provider = KlingProvider.build(settings(emulator.url, secret="sk-wrong-31415"))
    try:
        err = await failure(provider, generation("kling-v2"))
    finally:
        await provider.close()
    assert err.code is ErrorCode.PROVIDER_AUTH and "sk-wrong-31415" not in err.message and "1002" in err.message


async def test_an_expired_token_is_signed_again_once(kling, control) -> None:
    token = kling.http.client.auth
    token._clock = lambda: time.time() - 250  # the cached token was signed 250 s ago (not due for renewal)
    await kling.generate(generation("kling-v2"), Recorder().progress)
    token._clock = time.time
    options(control, clock_offset=1600)  # Kling's clock runs ahead: the cached token expired, a new one is good
    result = await kling.generate(generation("kling-v2"), Recorder().progress)
    assert len(result.images) == 1
    refused = [c for c in control.calls("POST") if not c["authorized"]]
    assert len(refused) == 1, "the expired token once (1004), then a fresh one"


async def test_a_model_kling_does_not_serve_goes_to_the_next_route(kling) -> None:
    err = await failure(kling, generation("flux-dev"))
    assert err.code is ErrorCode.PROVIDER_ERROR and err.retryable


async def test_a_timed_out_task_is_a_retryable_timeout(emulator, control) -> None:
    control.faults(job_seconds=30)
    provider = KlingProvider.build(settings(emulator.url, WORKER_JOB_TIMEOUT_SECONDS=0.4))
    try:
        err = await failure(provider, generation("kling-v2"))
    finally:
        await provider.close()
    assert (err.code, err.retryable) == (ErrorCode.TIMEOUT, True)


async def test_a_cancelled_job_stops_polling(kling, control) -> None:
    control.faults(job_seconds=30)
    rec = Recorder()
    job = asyncio.create_task(kling.generate(generation("kling-v2"), rec.progress))
    while not rec.upstream_ids:
        await asyncio.sleep(0.01)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await kling.cancel(rec.upstream_ids[0])  # Kling has no cancel endpoint: nothing is sent
    polls = len(control.calls("GET"))
    await asyncio.sleep(0.3)
    assert len(control.calls("GET")) == polls and control.calls("POST", "/v1/images/generations") != []


@pytest.mark.parametrize(("fmt", "got"), [(gen.OUTPUT_FORMAT_JPEG, "jpeg"), (gen.OUTPUT_FORMAT_WEBP, "webp")])
async def test_output_formats(kling, control, fmt, got) -> None:
    result = await kling.generate(generation("kling-v2-1", output_format=fmt), Recorder().progress)
    assert image_info(result.images[0].data)[0] == got and result.images[0].output_format == fmt


# ---- through the real mesh: Kafka, storage, status and a worker process for kling ----

@pytest.fixture(scope="module")
def kling_worker(mesh, emulator):
    instance = start_worker(mesh, "kling", KLING_ACCESS_KEY=ACCESS, KLING_SECRET_KEY=SECRET, KLING_BASE_URL=emulator.url,
                            WORKER_INPUT_URLS_ALLOW_PRIVATE="true")
    yield instance
    mesh.stop(instance)


async def test_mesh_try_on_with_stored_inputs(mesh, kling_worker, control) -> None:
    g = queued(generation("kolors-virtual-try-on-v1", "", size="auto", kind=gen.GENERATION_KIND_EDIT), "kling")
    person = await store(mesh, g.id, png(420, 640), index=900)
    garment = await store(mesh, g.id, png(500, 500, (20, 200, 20)), index=901)
    g.params.input_images.add(object_key=person, role="person", mime_type="image/png")
    g.params.input_images.add(object_key=garment, role="garment", mime_type="image/png")
    await dispatch(mesh, g)
    done = await finished(mesh, g.id)
    assert done.state == gen.GENERATION_STATE_SUCCEEDED, done
    [task] = tasks(control)
    assert task["kind"] == "kolors-virtual-try-on" and done.attempts[0].upstream_id == task["id"]
    [ref] = done.images
    assert image_info(await fetch(mesh, ref.object_key)) == ("png", 420, 640)


async def test_mesh_a_down_kling_goes_to_the_next_route(mesh, kling_worker, control) -> None:
    control.faults(down=True)
    g = queued(generation("kling-v2", "fallback please"), "kling")
    await dispatch(mesh, g, routes=("kling", "local"))
    back = await wait_for(mesh, g.id, lambda s: s.attempts and s.attempts[0].error.code)
    assert (back.attempts[0].provider, back.attempts[0].error.code, back.attempts[0].error.retryable) == (
        "kling", "provider_unavailable", True)


async def test_mesh_a_refusal_is_final_even_with_routes_left(mesh, kling_worker, control) -> None:
    g = queued(generation("kling-v2", "unsafe-output thing"), "kling")
    await dispatch(mesh, g, routes=("kling", "local"))
    done = await finished(mesh, g.id)
    assert done.state == gen.GENERATION_STATE_FAILED and done.error.code == "content_policy_violation", done
    assert done.error.provider == "kling" and len(done.attempts) == 1


async def test_mesh_a_cancel_ends_the_job(mesh, kling_worker, control) -> None:
    control.faults(job_seconds=60)
    g = queued(generation("kling-v2", "slow"), "kling")
    await dispatch(mesh, g)
    await wait_for(mesh, g.id, lambda s: s.attempts and s.attempts[0].upstream_id)
    await cancel(mesh, g.id)
    await asyncio.sleep(1.5)  # the worker stops its job: its polls end
    polls = len(control.calls("GET"))
    await asyncio.sleep(1.5)
    assert len(control.calls("GET")) == polls

"""Midjourney proxies: prompts, actions, buttons, describe text, submit codes and failures."""

from __future__ import annotations

import functools

import pytest

from services.worker.tests.support import generation
from svckit.errors import ErrorCode
from worker.providers import ProviderError
from worker.providers import midjourney_api as mj
from worker.providers.midjourney import MidjourneySettings

NOVICEZK, TRUEAI = mj.of("novicezk"), mj.of("trueai")
g = functools.partial(generation, model="midjourney-v6", prompt="a cat", size="1:1", seed=9)


@pytest.mark.parametrize(
    ("generation", "flavor", "prompt"),
    [
        (g(), NOVICEZK, "a cat --seed 9 --v 6"),
        (g(size="9:16", negative_prompt="dogs"), TRUEAI, "a cat --ar 9:16 --no dogs --seed 9 --v 6"),
        (
            g(prompt="a cat --aspect 3:2 --niji 6 --seed 1", size="16:9"),
            NOVICEZK,
            "a cat --aspect 3:2 --niji 6 --seed 1",
        ),
        (g(model="midjourney-turbo"), NOVICEZK, "a cat --seed 9 --v 6 --turbo"),
        (g(model="midjourney-turbo"), TRUEAI, "a cat --seed 9 --v 6"),
    ],
)
def test_imagine_prompts(generation, flavor, prompt) -> None:
    assert mj.imagine_prompt(generation, flavor) == prompt


def test_v7_prompts_carry_the_omni_reference_and_the_options_unless_written() -> None:
    v7 = g(model="midjourney-v7")
    assert mj.imagine_prompt(v7, TRUEAI) == "a cat --seed 9 --v 7"
    prompt = mj.imagine_prompt(
        v7, NOVICEZK, options={"draft": True, "omni_weight": 200, "exp": 0}, omni_reference="https://x.example/r.png"
    )
    assert prompt == "a cat --oref https://x.example/r.png --draft --exp 0 --ow 200 --seed 9 --v 7"
    written = g(model="midjourney-v7", prompt="a cat --oref https://y.example/a.png --ow 50 --draft")
    assert mj.imagine_prompt(written, TRUEAI, options={"draft": False, "omni_weight": 300}) == (
        "a cat --oref https://y.example/a.png --ow 50 --draft --seed 9 --v 7"
    )
    with pytest.raises(ProviderError) as exc:
        mj.imagine_prompt(v7, TRUEAI, options={"omni_weight": 100})
    assert exc.value.code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"code": 4, "description": "未开启上传功能", "result": None}, ErrorCode.INVALID_REQUEST),
        ({"code": 1, "description": "success", "result": []}, ErrorCode.PROVIDER_ERROR),
        ({"code": 1, "description": "success", "result": ["file:///etc/passwd"]}, ErrorCode.PROVIDER_ERROR),
        (None, ErrorCode.PROVIDER_ERROR),
    ],
)
def test_uploads_without_a_url_are_errors(body, code) -> None:
    assert mj.uploaded_url({"code": 1, "result": ["https://cdn.discordapp.com/a.png"]}).endswith("/a.png")
    with pytest.raises(ProviderError) as exc:
        mj.uploaded_url(body)
    assert exc.value.code is code


def test_flavours() -> None:
    assert NOVICEZK.headers("s") == {"mj-api-secret": "s"} and TRUEAI.headers("s") == {"Authorization": "s"}
    assert NOVICEZK.headers("") == {}
    assert TRUEAI.prefix("midjourney-turbo") == "/mj-turbo" and NOVICEZK.prefix("midjourney-turbo") == ""
    with pytest.raises(ValueError):
        mj.of("midjourney-official")


@pytest.mark.parametrize(
    ("action", "change"),
    [
        ("U1", mj.Change("UPSCALE", 1)),
        ("v4", mj.Change("VARIATION", 4)),
        ("reroll", mj.Change("REROLL")),
        ("🔄", mj.Change("REROLL")),
        ("MJ::JOB::upsample::3::abc", mj.Change("UPSCALE", 3)),
        ("MJ::JOB::reroll::0::abc::SOLO", mj.Change("REROLL")),
        ("MJ::JOB::upsample_v6_2x_subtle::1::abc::SOLO", None),
        ("U5", None),
        ("MJ::Outpaint::50::1::abc::SOLO", None),
    ],
)
def test_parse_change(action, change) -> None:
    assert mj.parse_change(action) == change


def test_change_bodies_and_custom_ids() -> None:
    assert mj.change_body("t1", mj.Change("UPSCALE", 2)) == {"taskId": "t1", "action": "UPSCALE", "index": 2}
    assert mj.change_body("t1", mj.Change("REROLL")) == {"taskId": "t1", "action": "REROLL"}
    buttons = mj.grid_buttons({"id": "t1", "properties": {"messageHash": "h"}})
    assert [b.label or b.emoji for b in buttons] == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]
    assert mj.custom_id_for("V2", buttons) == "MJ::JOB::variation::2::h"
    assert mj.custom_id_for("reroll", buttons) == "MJ::JOB::reroll::0::h::SOLO"
    assert mj.custom_id_for("MJ::CustomZoom::x", buttons) == "MJ::CustomZoom::x"
    with pytest.raises(ProviderError) as exc:
        mj.custom_id_for("U1", [])
    assert exc.value.code is ErrorCode.INVALID_REQUEST


def test_buttons_per_flavour() -> None:
    trueai_task = {
        "action": "UPSCALE",
        "buttons": [{"customId": "MJ::JOB::low_variation::1::h::SOLO", "label": "Vary (Subtle)", "emoji": None}],
    }
    assert [(b.custom_id, b.label) for b in mj.buttons_of(trueai_task, TRUEAI)] == [
        ("MJ::JOB::low_variation::1::h::SOLO", "Vary (Subtle)")
    ]
    assert mj.buttons_of({"action": "UPSCALE", "id": "t"}, NOVICEZK) == []
    assert len(mj.buttons_of({"action": "BLEND", "id": "t"}, NOVICEZK)) == 9


def test_describe_text() -> None:
    text = "1️⃣ a cat, oil painting --ar 4:3\n\n2️⃣ a cat in snow --ar 4:3\n\n3️⃣ cat --ar 4:3\n\n4️⃣ a  small\ncat --ar 4:3"
    assert mj.descriptions_of({"properties": {"finalPrompt": text}}) == [
        "a cat, oil painting --ar 4:3",
        "a cat in snow --ar 4:3",
        "cat --ar 4:3",
        "a small cat --ar 4:3",
    ]
    assert mj.descriptions_of({"prompt": "one\n\ntwo"}) == ["one", "two"]


def test_blend_dimensions() -> None:
    assert [mj.blend_dimensions(*s) for s in ((832, 1248), (1024, 1024), (1344, 768))] == [
        "PORTRAIT",
        "SQUARE",
        "LANDSCAPE",
    ]


@pytest.mark.parametrize(
    ("body", "code", "retryable"),
    [
        (
            {"code": 24, "description": "可能包含敏感词", "properties": {"bannedWord": "x"}},
            ErrorCode.CONTENT_POLICY_VIOLATION,
            False,
        ),
        ({"code": 23, "description": "队列已满"}, ErrorCode.PROVIDER_UNAVAILABLE, True),
        ({"code": 4, "description": "prompt不能为空"}, ErrorCode.INVALID_REQUEST, False),
        ({"code": 3, "description": "关联任务不存在或已失效"}, ErrorCode.NOT_FOUND, False),
        ({"code": 9, "description": "system error"}, ErrorCode.PROVIDER_UNAVAILABLE, True),
        ({"code": 21, "description": "Waiting for window confirm", "result": "1"}, ErrorCode.PROVIDER_ERROR, False),
        ({"code": 77}, ErrorCode.PROVIDER_ERROR, True),
        (None, ErrorCode.PROVIDER_ERROR, True),
    ],
)
def test_submit_codes(body, code, retryable) -> None:
    with pytest.raises(ProviderError) as exc:
        mj.submitted_task_id(body)
    assert (exc.value.code, exc.value.retryable) == (code, retryable)


def test_accepted_submits() -> None:
    assert mj.submitted_task_id({"code": 1, "result": "123"}) == "123"
    assert mj.submitted_task_id({"code": 22, "result": "124", "properties": {"numberOfQueues": 3}}) == "124"
    assert mj.submitted_task_id({"code": 21, "description": "任务已存在", "result": "125"}) == "125"
    assert isinstance(_raised({"code": 23}), mj.QueueFull)


def _raised(body) -> Exception:
    try:
        mj.submitted_task_id(body)
    except ProviderError as exc:
        return exc
    raise AssertionError("no error")


@pytest.mark.parametrize(
    ("task", "code"),
    [
        ({"status": "FAILURE", "failReason": "Banned prompt detected"}, ErrorCode.CONTENT_POLICY_VIOLATION),
        ({"status": "FAILURE", "failReason": "Your job was blocked by moderation"}, ErrorCode.CONTENT_POLICY_VIOLATION),
        ({"status": "FAILURE", "failReason": "Discord timeout"}, ErrorCode.PROVIDER_ERROR),
        ({"status": "CANCEL"}, ErrorCode.PROVIDER_ERROR),
        ({"status": "MODAL"}, ErrorCode.PROVIDER_ERROR),
    ],
)
def test_failures(task, code) -> None:
    assert mj.failure_of(task).code is code


def test_settings_take_the_proxy_root() -> None:
    s = MidjourneySettings(MIDJOURNEY_BASE_URL="http://mj:8080/mj/", MIDJOURNEY_FLAVOR="trueai")
    assert s.base_url == "http://mj:8080" and s.api_key.get_secret_value() == ""
    with pytest.raises(ValueError):
        MidjourneySettings(MIDJOURNEY_BASE_URL="http://mj:8080", MIDJOURNEY_FLAVOR="other")

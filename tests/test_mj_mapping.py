"""The Midjourney proxy mapping, pure: requests -> params, codes, generation -> task."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from edge import mj_mapping as mjm
from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode, GatewayError
from presenters.mj import mj_task


def png_uri(size=(8, 6), fmt="PNG", mime="image/png") -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format=fmt)
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode()


def finished_parent(**kw) -> gen.Generation:
    g = gen.Generation(id="gen_parent", model="midjourney-v6", state=gen.GENERATION_STATE_SUCCEEDED, **kw)
    g.params.prompt = "a cat --ar 2:3"
    g.params.size = "2:3"
    for label, cid in (("U1", "MJ::JOB::upsample::1::abc"), ("U2", "MJ::JOB::upsample::2::abc"),
                       ("V3", "MJ::JOB::variation::3::abc"), ("\U0001f504", "MJ::JOB::reroll::0::abc::SOLO")):
        g.buttons.add(custom_id=cid, label=label)
    return g


def test_imagine_maps_prompt_bot_hook_and_state() -> None:
    params, images = mjm.imagine_params(
        mjm.ImagineBody(prompt=" Cat --ar 16:9 ", botType="NIJI_JOURNEY", notifyHook="https://h.example/cb", state="s1",
                        base64Array=[png_uri()])
    )
    assert (params.model, params.prompt, params.kind, params.n) == ("niji", "Cat --ar 16:9", gen.GENERATION_KIND_GENERATE, 1)
    assert (params.callback_url, params.webhook_format, params.client_state) == ("https://h.example/cb", "mj", "s1")
    assert len(images) == 1
    assert mjm.imagine_params(mjm.ImagineBody(prompt="x"))[0].model == "midjourney"
    assert mjm.imagine_params(mjm.ImagineBody(prompt="x", base64="data:image/png;base64,AA=="))[1] == ["data:image/png;base64,AA=="]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (mjm.ImagineBody(prompt="  "), "prompt"),
        (mjm.ImagineBody(prompt="x", botType="DALLE"), "botType"),
        (mjm.ImagineBody(prompt="x", notifyHook="ftp://nope"), "notifyHook"),
    ],
)
def test_bad_imagine_is_a_validation_error(body: mjm.ImagineBody, param: str) -> None:
    with pytest.raises(GatewayError) as exc:
        mjm.imagine_params(body)
    assert exc.value.param == param and mjm.code_of(exc.value) == mjm.VALIDATION_ERROR


def test_blend_and_describe() -> None:
    params, images = mjm.blend_params(mjm.BlendBody(base64Array=[png_uri(), png_uri()], dimensions="PORTRAIT"))
    assert (params.kind, params.size, len(images)) == (gen.GENERATION_KIND_BLEND, "2:3", 2)
    assert mjm.blend_params(mjm.BlendBody(base64Array=["a", "b", "c"]))[0].size == "1:1"
    for bad in ([png_uri()], [png_uri()] * 6):
        with pytest.raises(GatewayError):
            mjm.blend_params(mjm.BlendBody(base64Array=bad))
    with pytest.raises(GatewayError):
        mjm.blend_params(mjm.BlendBody(base64Array=["a", "b"], dimensions="WIDE"))
    params, images = mjm.describe_params(mjm.DescribeBody(base64=png_uri()))
    assert params.kind == gen.GENERATION_KIND_DESCRIBE and len(images) == 1
    params, images = mjm.describe_params(mjm.DescribeBody(link="https://img.example/a.png"))
    assert params.image_url == "https://img.example/a.png" and images == []
    with pytest.raises(GatewayError):
        mjm.describe_params(mjm.DescribeBody())


def test_decode_image_checks_the_bytes() -> None:
    img = mjm.decode_image(png_uri((8, 6)), "base64")
    assert (img.width, img.height, img.format, img.mime_type) == (8, 6, gen.OUTPUT_FORMAT_PNG, "image/png")
    jpeg = mjm.decode_image(png_uri(fmt="JPEG", mime="image/jpeg"), "base64")
    assert jpeg.format == gen.OUTPUT_FORMAT_JPEG
    bare = png_uri().split(",", 1)[1]
    assert mjm.decode_image(bare, "base64").width == 8
    for bad in ("data:image/png;base64,@@@", "data:image/png;base64,", base64.b64encode(b"not an image").decode(),
                png_uri(fmt="GIF", mime="image/gif"), "data:text/plain,hello"):
        with pytest.raises(GatewayError) as exc:
            mjm.decode_image(bad, "base64")
        assert exc.value.param == "base64"


def test_change_presses_the_parents_matching_button() -> None:
    parent = finished_parent()
    up = mjm.change_params(mjm.ChangeBody(taskId="gen_parent", action="UPSCALE", index=2), parent)
    assert (up.kind, up.parent_generation_id, up.action) == (gen.GENERATION_KIND_ACTION, "gen_parent", "MJ::JOB::upsample::2::abc")
    assert (up.prompt, up.model, up.size) == ("a cat --ar 2:3", "midjourney-v6", "2:3")
    assert mjm.change_params(mjm.ChangeBody(action="VARIATION", index=3), parent).action == "MJ::JOB::variation::3::abc"
    assert mjm.change_params(mjm.ChangeBody(action="reroll"), parent).action == "MJ::JOB::reroll::0::abc::SOLO"
    bare = gen.Generation(id="gen_b", model="midjourney-v6", state=gen.GENERATION_STATE_SUCCEEDED)
    assert mjm.change_params(mjm.ChangeBody(action="VARIATION", index=4), bare).action == "V4"
    for bad in (mjm.ChangeBody(action="ZOOM", index=1), mjm.ChangeBody(action="UPSCALE"), mjm.ChangeBody(action="UPSCALE", index=5)):
        with pytest.raises(GatewayError):
            mjm.change_params(bad, parent)
    running = finished_parent()
    running.state = gen.GENERATION_STATE_RUNNING
    with pytest.raises(GatewayError) as exc:
        mjm.change_params(mjm.ChangeBody(action="UPSCALE", index=1), running)
    assert mjm.code_of(exc.value) == mjm.VALIDATION_ERROR


def test_simple_change_and_action() -> None:
    body = mjm.parse_simple_change(mjm.SimpleChangeBody(content="gen_parent v3", state="x"))
    assert (body.taskId, body.action, body.index, body.state) == ("gen_parent", "VARIATION", 3, "x")
    assert mjm.parse_simple_change(mjm.SimpleChangeBody(content="gen_parent R")).action == "REROLL"
    with pytest.raises(GatewayError):
        mjm.parse_simple_change(mjm.SimpleChangeBody(content="gen_parent U9"))
    parent = finished_parent()
    pressed = mjm.action_params(mjm.ActionBody(taskId="gen_parent", customId="MJ::JOB::upsample::1::abc"), parent)
    assert pressed.action == "MJ::JOB::upsample::1::abc"
    with pytest.raises(GatewayError) as exc:
        mjm.action_params(mjm.ActionBody(taskId="gen_parent", customId="MJ::JOB::upsample::9::zzz"), parent)
    assert exc.value.param == "customId"


def test_error_codes() -> None:
    assert mjm.code_of(GatewayError(ErrorCode.NOT_FOUND, "x")) == 3
    assert mjm.code_of(GatewayError(ErrorCode.INVALID_REQUEST, "x")) == 4
    assert mjm.code_of(GatewayError(ErrorCode.MODEL_NOT_FOUND, "x")) == 4
    assert mjm.code_of(GatewayError(ErrorCode.CONTENT_POLICY_VIOLATION, "x")) == 24
    assert mjm.code_of(GatewayError(ErrorCode.RATE_LIMITED, "x")) == 23
    assert mjm.code_of(GatewayError(ErrorCode.UNAVAILABLE, "x")) == 9
    assert mjm.failure_result(GatewayError(ErrorCode.INVALID_REQUEST, "bad", param="prompt")) == {
        "code": 4, "description": "bad", "result": None, "properties": {"param": "prompt"},
    }


def ts(ms: int):
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromMilliseconds(ms)
    return t


def test_task_of_each_state() -> None:
    g = gen.Generation(id="gen_t", model="midjourney-v6", state=gen.GENERATION_STATE_QUEUED, seed=42, create_time=ts(1000))
    g.params.prompt = "Cat"
    g.params.client_state = "mine"
    t = mj_task(g, [])
    assert (t["id"], t["action"], t["status"], t["progress"], t["prompt"], t["promptEn"]) == ("gen_t", "IMAGINE", "SUBMITTED", "0%", "Cat", "Cat")
    assert (t["description"], t["state"], t["submitTime"], t["startTime"], t["finishTime"]) == ("/imagine Cat", "mine", 1000, None, None)
    assert t["imageUrl"] is None and t["failReason"] is None and t["botType"] == "MID_JOURNEY" and t["seed"] == "42"

    g.state, g.progress_percent = gen.GENERATION_STATE_RUNNING, 45.5
    g.start_time.CopyFrom(ts(2000))
    t = mj_task(g, [])
    assert (t["status"], t["progress"], t["startTime"]) == ("IN_PROGRESS", "45%", 2000)

    g.state = gen.GENERATION_STATE_SUCCEEDED
    g.end_time.CopyFrom(ts(3000))
    g.images.add(object_key="k", revised_prompt="Cat, final")
    g.buttons.add(custom_id="MJ::JOB::upsample::1::h", label="U1")
    t = mj_task(g, ["https://cdn/grid.png"])
    assert (t["status"], t["progress"], t["imageUrl"], t["finishTime"]) == ("SUCCESS", "100%", "https://cdn/grid.png", 3000)
    assert t["buttons"] == [{"customId": "MJ::JOB::upsample::1::h", "emoji": "", "label": "U1", "style": 2, "type": 2}]
    assert t["properties"]["finalPrompt"] == "Cat, final"

    for state, reason in ((gen.GENERATION_STATE_FAILED, "banned"), (gen.GENERATION_STATE_CANCELLED, "Cancelled by the client.")):
        g.state = state
        g.error.message = reason
        t = mj_task(g, [])
        assert (t["status"], t["progress"], t["failReason"]) == ("FAILURE", "", reason)


def test_task_actions_and_descriptions() -> None:
    g = gen.Generation(id="gen_c", model="niji", state=gen.GENERATION_STATE_SUCCEEDED)
    g.params.kind = gen.GENERATION_KIND_ACTION
    g.params.parent_generation_id = "gen_p"
    for action, name, desc in (
        ("MJ::JOB::upsample::2::h", "UPSCALE", "/up gen_p U2"),
        ("MJ::JOB::variation::1::h", "VARIATION", "/up gen_p V1"),
        ("MJ::JOB::reroll::0::h::SOLO", "REROLL", "/up gen_p R"),
        ("U3", "UPSCALE", "/up gen_p U3"),
        ("reroll", "REROLL", "/up gen_p R"),
        ("MJ::JOB::pan_left::1::h::SOLO", "PAN", "/up gen_p MJ::JOB::pan_left::1::h::SOLO"),
    ):
        g.params.action = action
        t = mj_task(g, [])
        assert (t["action"], t["description"], t["parentId"], t["botType"]) == (name, desc, "gen_p", "NIJI_JOURNEY")
    blend = gen.Generation(id="gen_b", model="midjourney-v6")
    blend.params.kind = gen.GENERATION_KIND_BLEND
    blend.params.input_images.add(object_key="a")
    blend.params.input_images.add(object_key="b")
    assert (mj_task(blend, [])["action"], mj_task(blend, [])["description"]) == ("BLEND", "/blend gen_b 2")
    desc = gen.Generation(id="gen_d", model="midjourney-v6", state=gen.GENERATION_STATE_SUCCEEDED)
    desc.params.kind = gen.GENERATION_KIND_DESCRIBE
    desc.params.input_images.add(object_key="a", mime_type="image/jpeg")
    desc.descriptions.extend(["one", "two", "three", "four"])
    t = mj_task(desc, [])
    assert (t["action"], t["description"]) == ("DESCRIBE", "/describe gen_d.jpg")
    assert t["properties"]["finalPrompt"] == "one\n\ntwo\n\nthree\n\nfour"
    assert t["properties"]["descriptions"] == ["one", "two", "three", "four"]

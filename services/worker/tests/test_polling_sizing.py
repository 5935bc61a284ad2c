"""Helpers of the adapter kit: the job clock, progress, fan-out, concurrency, sizes."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from PIL import Image

from pixelmesh.common.v1 import generation_pb2 as gen
from services.worker.tests.support import generation
from svckit.errors import ErrorCode
from worker.providers import Progress, ProviderError
from worker.providers.adapter import JobClock, all_or_first_error
from worker.providers.detail import detail_message
from worker.providers.images import deliver
from worker.providers.polling import Fanout, percent_of
from worker.providers.settings import UpstreamSettings
from worker.providers.shaping import aspect_ratio, fit, nearest_ratio


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("37%", 37.0),
        ("", None),
        (None, None),
        (0.5, 50.0),
        (1, 100.0),
        (45, 45.0),
        (" 12%|██ 3/28\n 57%|█████", 57.0),
        (True, None),
    ],
)
def test_percent_of(value, expected) -> None:
    assert percent_of(value) == expected


async def test_job_clock_polls_grow_up_to_the_cap_and_the_job_times_out() -> None:
    s = UpstreamSettings(
        WORKER_POLL_INTERVAL_SECONDS=0.01, WORKER_POLL_MAX_INTERVAL_SECONDS=0.04, WORKER_JOB_TIMEOUT_SECONDS=0.3
    )
    clock = JobClock("x", s)
    gaps = []

    async def poll_forever() -> None:
        while True:
            started = time.monotonic()
            await clock.wait()
            gaps.append(time.monotonic() - started)

    with pytest.raises(ProviderError) as exc:
        await clock.bound(poll_forever())
    assert exc.value.code is ErrorCode.TIMEOUT and exc.value.retryable
    assert gaps[0] < 0.03 and max(gaps) < 0.1
    assert 4 <= len(gaps) <= 40


async def test_fanout_reports_the_mean_only_when_it_moves() -> None:
    seen, ids = [], []

    async def report(percent, partial):
        seen.append(percent)

    fan = Fanout(Progress(report, ids.append), 2)
    await fan.upstream(1, "b")
    await fan.upstream(0, "a")
    await fan.report(0, 50.0)
    await fan.report(0, 50.4)
    await fan.report(1, 100.0)
    await fan.report(0, 100.0)
    assert seen == [0.0, 0.0, 25.0, 75.2, 100.0]
    assert ids == ["b", "a,b"]


async def test_all_or_first_error_cancels_the_rest_on_the_first_failure() -> None:
    cancelled = asyncio.Event()

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def boom():
        await asyncio.sleep(0.01)
        raise ProviderError(ErrorCode.PROVIDER_ERROR, "boom")

    with pytest.raises(ProviderError, match="boom"):
        await all_or_first_error([slow(), boom()])
    assert cancelled.is_set()

    async def value(v):
        await asyncio.sleep(0.01 * (3 - v))
        return v

    assert await all_or_first_error([value(v) for v in range(3)]) == [0, 1, 2]


@pytest.mark.parametrize(
    ("size", "fitted"),
    [
        ((1024, 1024), (1024, 1024)),
        ((1536, 1024), (1440, 960)),
        ((1366, 768), (1376, 768)),
        ((1792, 1024), (1440, 832)),
        ((128, 128), (256, 256)),
    ],
)
def test_fit_keeps_the_aspect_within_bounds(size, fitted) -> None:
    assert fit(*size, lo=256, hi=1440, step=32) == fitted


def test_aspect_ratios() -> None:
    from fractions import Fraction

    assert aspect_ratio(1344, 768) == "7:4"
    assert aspect_ratio(1024, 1024) == "1:1"
    assert aspect_ratio(4000, 1000, widest=Fraction(21, 9)) == "7:3"
    assert nearest_ratio(1344, 768, ["1:1", "16:9", "3:2", "2:3"]) == "16:9"
    assert nearest_ratio(768, 1024, ["1:1", "3:4", "16:9"]) == "3:4"


async def test_deliver_resizes_to_the_promised_size_then_converts() -> None:
    out = io.BytesIO()
    Image.new("RGB", (1440, 960), (1, 2, 3)).save(out, "PNG")
    g = generation(width=1536, height=1024, fmt=gen.OUTPUT_FORMAT_WEBP)
    image = await deliver(out.getvalue(), g, "x", exact_size=True)
    with Image.open(io.BytesIO(image.data)) as got:
        assert (got.format, got.size) == ("WEBP", (1536, 1024))
    with pytest.raises(ProviderError, match="not an image"):
        await deliver(b"nope", g, "x", exact_size=True)


def test_detail_messages() -> None:
    assert (
        detail_message({"detail": [{"loc": ["body", "width"], "msg": "too big"}, {"loc": ["body"], "msg": "bad"}]})
        == "width: too big; bad"
    )
    assert detail_message({"detail": "Not authenticated"}) == "Not authenticated"
    assert detail_message({"title": "Input validation failed", "status": 422}) == "Input validation failed"


async def test_a_long_job_is_first_polled_later() -> None:
    s = UpstreamSettings(WORKER_POLL_INTERVAL_SECONDS=0.01, WORKER_POLL_MAX_INTERVAL_SECONDS=0.2)
    for eta, low, high in ((0, 0.005, 0.05), (1.0, 0.07, 0.15), (60, 0.15, 0.3)):
        clock = JobClock("x", s, eta_seconds=eta)
        started = time.monotonic()
        await clock.wait()
        assert low <= time.monotonic() - started <= high, eta

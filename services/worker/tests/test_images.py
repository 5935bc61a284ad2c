import io

import pytest
from PIL import Image

from pixelmesh.common.v1 import generation_pb2 as gen
from services.worker.tests.support import generation
from svckit.errors import ErrorCode
from tests.emulators.harness import fake_image
from worker.providers import ProviderError
from worker.providers.images import decode_b64, deliver


async def test_same_format_without_compression_keeps_the_bytes() -> None:
    png = fake_image(32, 16, "a")
    out = await deliver(png, generation(fmt=gen.OUTPUT_FORMAT_PNG), "t")
    assert out.data == png and (out.width, out.height) == (32, 16)


@pytest.mark.parametrize("fmt,pil", [(gen.OUTPUT_FORMAT_JPEG, "JPEG"), (gen.OUTPUT_FORMAT_WEBP, "WEBP")])
async def test_converts_to_the_requested_format(fmt: int, pil: str) -> None:
    out = await deliver(fake_image(32, 16, "a"), generation(fmt=fmt, output_compression=50), "t")
    assert Image.open(io.BytesIO(out.data)).format == pil and out.output_format == fmt


async def test_compression_changes_lossy_size() -> None:
    src = fake_image(256, 256, "b")
    low = await deliver(src, generation(fmt=gen.OUTPUT_FORMAT_JPEG, output_compression=10), "t")
    high = await deliver(src, generation(fmt=gen.OUTPUT_FORMAT_JPEG, output_compression=95), "t")
    assert len(low.data) < len(high.data)


async def test_garbage_is_a_provider_error() -> None:
    with pytest.raises(ProviderError) as exc:
        await deliver(b"not an image", generation(fmt=gen.OUTPUT_FORMAT_PNG), "t")
    assert exc.value.code is ErrorCode.PROVIDER_ERROR
    with pytest.raises(ProviderError):
        decode_b64("%%%", "t")
    assert decode_b64("data:image/png;base64,aGk=", "t") == b"hi"

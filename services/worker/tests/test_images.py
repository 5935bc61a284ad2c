import io

import pytest
from PIL import Image

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from tests.emulators.harness import fake_image
from worker.providers import ProviderError
from worker.providers.images import decode_b64, to_requested


def generation(fmt: int, compression: int | None = None) -> gen.Generation:
    g = gen.Generation(output_format=fmt)
    if compression is not None:
        g.params.output_compression = compression
    return g


async def test_same_format_without_compression_keeps_the_bytes() -> None:
    png = fake_image(32, 16, "a")
    out = await to_requested(png, generation(gen.OUTPUT_FORMAT_PNG), "t")
    assert out.data == png and (out.width, out.height) == (32, 16)


@pytest.mark.parametrize("fmt,pil", [(gen.OUTPUT_FORMAT_JPEG, "JPEG"), (gen.OUTPUT_FORMAT_WEBP, "WEBP")])
async def test_converts_to_the_requested_format(fmt: int, pil: str) -> None:
    out = await to_requested(fake_image(32, 16, "a"), generation(fmt, 50), "t")
    assert Image.open(io.BytesIO(out.data)).format == pil and out.output_format == fmt


async def test_compression_changes_lossy_size() -> None:
    src = fake_image(256, 256, "b")
    low = await to_requested(src, generation(gen.OUTPUT_FORMAT_JPEG, 10), "t")
    high = await to_requested(src, generation(gen.OUTPUT_FORMAT_JPEG, 95), "t")
    assert len(low.data) < len(high.data)


async def test_garbage_is_a_provider_error() -> None:
    with pytest.raises(ProviderError) as exc:
        await to_requested(b"not an image", generation(gen.OUTPUT_FORMAT_PNG), "t")
    assert exc.value.code is ErrorCode.PROVIDER_ERROR
    with pytest.raises(ProviderError):
        decode_b64("%%%", "t")
    assert decode_b64("data:image/png;base64,aGk=", "t") == b"hi"

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit import formats


def test_every_proto_format_is_mapped_once() -> None:
    declared = {v.number for v in gen.OutputFormat.DESCRIPTOR.values} - {gen.OUTPUT_FORMAT_UNSPECIFIED}
    assert set(formats.BY_ENUM) == declared
    assert len(formats.BY_NAME) == len(formats.BY_EXTENSION) == len(declared)


def test_unspecified_means_png_and_jpeg_files_end_in_jpg() -> None:
    assert formats.of(gen.OUTPUT_FORMAT_UNSPECIFIED).name == "png"
    assert formats.BY_NAME["jpeg"].extension == "jpg"
    assert formats.BY_NAME["webp"].mime_type == "image/webp"

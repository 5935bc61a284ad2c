from google.protobuf.struct_pb2 import Struct

from pixelmesh.common.v1 import generation_pb2 as gen
from worker.providers.options import provider_options


def test_no_options_is_an_empty_dict():
    assert provider_options(gen.Generation()) == {}


def test_whole_numbers_come_back_as_ints_and_the_rest_as_sent():
    options = Struct()
    options.update({"steps": 28, "guidance": 4.5, "raw": True, "aspect_ratio": "21:9", "loras": [{"scale": 1}]})
    generation = gen.Generation(params=gen.GenerationParams(provider_options=options))
    got = provider_options(generation)
    assert got == {"steps": 28, "guidance": 4.5, "raw": True, "aspect_ratio": "21:9", "loras": [{"scale": 1}]}
    assert isinstance(got["steps"], int) and isinstance(got["loras"][0]["scale"], int)

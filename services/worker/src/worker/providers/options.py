"""A generation's `provider_options`: upstream fields the gateway does not model.

Routing has already checked them against the model's allow-list (catalog
`provider_options`) and routed only to providers that take them, so an adapter merges
them into its upstream request as they are: after its own fields, which they may
override (FLUX ultra's `aspect_ratio` from the client wins over the one derived from
the size).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from pixelmesh.common.v1 import generation_pb2 as gen


def provider_options(generation: gen.Generation) -> dict[str, Any]:
    """The options as JSON values; whole numbers are ints again (a Struct holds only
    doubles, and upstreams such as BFL reject `steps: 28.0`)."""
    if not generation.params.HasField("provider_options"):
        return {}
    return {name: _restore(value) for name, value in MessageToDict(generation.params.provider_options).items()}


def _restore(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_restore(v) for v in value]
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    return value

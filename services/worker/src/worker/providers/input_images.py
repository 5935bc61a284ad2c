"""A generation's input images (edits, blends, describes), read for an upstream.

An `InputImage` is either stored (object_key: read through the storage service's
GetImage stream) or a URL the client gave (downloaded without credentials, bounded).
Upstreams that take URLs get the client's URL as is; stored images go as base64.
"""

from __future__ import annotations

import base64
import io

import grpc
from PIL import Image, UnidentifiedImageError

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.storage.v1 import storage_service_pb2 as storage_pb
from pixelmesh.storage.v1 import storage_service_pb2_grpc
from svckit.errors import ErrorCode
from svckit.grpc_client import channel
from worker.providers.base import ProviderError
from worker.providers.upstream import Upstream

_MIME_OF_FORMAT = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def images_of(generation: gen.Generation, role: str = "image") -> list[gen.InputImage]:
    """The inputs with that role ("" counts as "image"); params.image_url counts as one image."""
    found = [i for i in generation.params.input_images if (i.role or "image") == role]
    if role == "image" and not found and generation.params.image_url:
        found = [gen.InputImage(url=generation.params.image_url)]
    return found


def sniff_mime(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as probe:
            return _MIME_OF_FORMAT.get(probe.format or "", "application/octet-stream")
    except (UnidentifiedImageError, OSError):
        return "application/octet-stream"


class InputImages:
    def __init__(self, provider: str, storage_addr: str, upstream: Upstream, max_bytes: int) -> None:
        self._provider = provider
        self._storage_addr = storage_addr
        self._upstream = upstream
        self._max_bytes = max_bytes
        self._channel: grpc.aio.Channel | None = None

    async def read(self, image: gen.InputImage) -> tuple[bytes, str]:
        """(bytes, mime type) of one input image."""
        if image.object_key:
            data, mime = await self._from_storage(image.object_key)
        elif image.url:
            if image.url.startswith("data:"):
                header, _, payload = image.url.partition(",")
                try:
                    data = base64.b64decode(payload, validate=True)
                except ValueError as exc:
                    raise ProviderError(ErrorCode.INVALID_REQUEST, "an input image is not valid base64") from exc
                mime = header[5:].split(";")[0]
            else:
                try:
                    data = await self._upstream.download(image.url, self._max_bytes)
                except ProviderError as exc:
                    raise ProviderError(ErrorCode.INVALID_REQUEST, f"the input image URL could not be read: {exc.message}") from exc
                mime = ""
        else:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "an input image has neither a stored copy nor a URL")
        mime = image.mime_type or mime or sniff_mime(data)
        if not mime.startswith("image/"):
            mime = sniff_mime(data)
        return data, mime

    async def data_url(self, image: gen.InputImage) -> str:
        data, mime = await self.read(image)
        return f"data:{mime};base64,{base64.b64encode(data).decode()}"

    async def b64(self, image: gen.InputImage) -> str:
        data, _ = await self.read(image)
        return base64.b64encode(data).decode()

    async def url_or_data_url(self, image: gen.InputImage) -> str:
        """The client's http(s) URL when it gave one (the upstream fetches it), else a data URL."""
        if image.url.startswith(("http://", "https://")) and not image.object_key:
            return image.url
        return await self.data_url(image)

    async def _from_storage(self, key: str) -> tuple[bytes, str]:
        if not self._storage_addr:
            raise ProviderError(ErrorCode.INTERNAL, "STORAGE_ADDR is not set: stored input images cannot be read")
        if self._channel is None:
            self._channel = channel(self._storage_addr)
        stub = storage_service_pb2_grpc.StorageServiceStub(self._channel)
        parts, mime, size = [], "", 0
        try:
            async for part in stub.GetImage(storage_pb.GetImageRequest(object_key=key), timeout=60):
                mime = mime or part.mime_type
                size += len(part.chunk)
                if size > self._max_bytes:
                    raise ProviderError(ErrorCode.INVALID_REQUEST, f"an input image is larger than {self._max_bytes} bytes")
                parts.append(part.chunk)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise ProviderError(ErrorCode.INVALID_REQUEST, "an input image is no longer stored") from exc
            raise ProviderError(ErrorCode.UNAVAILABLE, f"reading an input image failed: {exc.code().name}", retryable=True) from exc
        return b"".join(parts), mime

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

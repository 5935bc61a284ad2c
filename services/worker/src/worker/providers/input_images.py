"""The images a client sent with a request (edits, variations, image-to-image), as bytes.

A generation names its inputs in `params.input_images` (an object key in the storage
service, or a URL the client gave) and, in the aggregator API, `params.image_url`. Stored
inputs are read through the worker's storage client; URLs are fetched with the upstream
kit's credential-free download client, bounded like results. The bytes only ever travel
to the upstream: they are never logged or put in an error message.
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc
from PIL import Image, UnidentifiedImageError

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.storage.v1 import storage_service_pb2 as storage_pb
from pixelmesh.storage.v1 import storage_service_pb2_grpc
from svckit.errors import ErrorCode
from worker.providers.base import ProviderError
from worker.providers.images import MAX_PIXELS
from worker.providers.upstream import Upstream

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
PIL_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass(frozen=True)
class InputFile:
    role: str  # "image" or "mask"
    data: bytes
    mime_type: str
    width: int
    height: int
    image_format: str  # Pillow's name: PNG, JPEG, WEBP, ...

    @property
    def filename(self) -> str:
        return f"{self.role}.{EXTENSIONS.get(self.mime_type, 'png')}"


def probe(data: bytes, what: str) -> tuple[str, int, int]:
    """(Pillow format, width, height) of an input, or a clear INVALID_REQUEST."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ProviderError(ErrorCode.INVALID_REQUEST, f"the {what} is larger than {MAX_PIXELS} pixels")
            return image.format or "", image.width, image.height
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"the {what} is not an image") from exc


def _to_png(data: bytes, rgba: bool) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        converted = image.convert("RGBA" if rgba else ("RGBA" if "A" in image.getbands() else "RGB"))
    out = io.BytesIO()
    converted.save(out, "PNG")
    return out.getvalue()


async def as_png(item: InputFile, *, rgba: bool = False) -> InputFile:
    """The input as PNG (DALL·E 2 and masks accept only PNG; masks need an alpha channel)."""
    if item.image_format == "PNG" and not rgba:
        return item
    data = await asyncio.to_thread(_to_png, item.data, rgba)
    return InputFile(item.role, data, "image/png", item.width, item.height, "PNG")


class InputReader:
    """Fetches a generation's input images from storage or from the URLs the client gave,
    and hands them over as the upstream takes them (bytes, base64, data URLs, or the
    client's own URL passed through)."""

    def __init__(
        self,
        upstream: Upstream,
        max_bytes: int,
        storage: storage_service_pb2_grpc.StorageServiceAsyncStub | None = None,
        *,
        allow_private_urls: bool = False,
    ) -> None:
        self._upstream = upstream
        self._max_bytes = max_bytes
        self._storage = storage
        self._allow_private = allow_private_urls

    async def load(self, generation: gen.Generation) -> list[InputFile]:
        """Every input of the generation, in order: input_images, then params.image_url."""
        params = generation.params
        refs = list(params.input_images)
        if params.image_url and not any(ref.url == params.image_url for ref in refs):
            refs.append(gen.InputImage(url=params.image_url, role="image"))
        return [await self.read(ref) for ref in refs]

    async def read(self, ref: gen.InputImage) -> InputFile:
        """One input image, from storage or its URL (data: URLs decoded), probed."""
        role = ref.role or "image"
        if ref.object_key:
            data = await self._from_storage(ref.object_key)
        elif ref.url.startswith("data:"):
            data = _decode_data_url(ref.url)
        elif ref.url:
            data = await self._from_url(ref.url)
        else:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"an input {role} has neither a stored object nor a URL")
        image_format, width, height = await asyncio.to_thread(probe, data, f"input {role}")
        mime = PIL_MIME.get(image_format, ref.mime_type or "application/octet-stream")
        return InputFile(role, data, mime, width, height, image_format)

    async def data_url(self, ref: gen.InputImage) -> str:
        item = await self.read(ref)
        return f"data:{item.mime_type};base64,{base64.b64encode(item.data).decode()}"

    async def b64(self, ref: gen.InputImage) -> str:
        return base64.b64encode((await self.read(ref)).data).decode()

    async def url_or_data_url(self, ref: gen.InputImage) -> str:
        """The client's http(s) URL when it gave one (the upstream fetches it), else a data URL."""
        if is_client_url(ref):
            return ref.url
        return await self.data_url(ref)

    async def _from_storage(self, object_key: str) -> bytes:
        if self._storage is None:
            raise ProviderError(ErrorCode.INTERNAL, "this worker has no storage service to read input images from")
        parts, size = [], 0
        try:
            async for part in self._storage.GetImage(storage_pb.GetImageRequest(object_key=object_key), timeout=60):
                size += len(part.chunk)
                if size > self._max_bytes:
                    raise ProviderError(
                        ErrorCode.INVALID_REQUEST, f"an input image is larger than {self._max_bytes} bytes"
                    )
                parts.append(part.chunk)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise ProviderError(ErrorCode.INVALID_REQUEST, "an input image is no longer stored") from exc
            raise ProviderError(
                ErrorCode.UNAVAILABLE, f"reading an input image from storage failed ({exc.code().name})", retryable=True
            ) from exc
        return b"".join(parts)

    async def _from_url(self, url: str) -> bytes:
        if not url.startswith(("https://", "http://")):
            raise ProviderError(ErrorCode.INVALID_REQUEST, "an input image URL must be http(s)")
        if not self._allow_private:
            await _refuse_private(url)
        try:
            return await self._upstream.download(url, self._max_bytes)
        except ProviderError as exc:
            if exc.retryable:
                raise
            raise ProviderError(
                ErrorCode.INVALID_REQUEST, "the input image URL could not be fetched or is too large"
            ) from exc


async def _refuse_private(url: str) -> None:
    """An input URL whose host resolves to a loopback, private, link-local or reserved
    address is refused (redirects are followed by the download client unchecked)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443)
    except OSError as exc:
        raise ProviderError(ErrorCode.INVALID_REQUEST, "the input image URL's host does not resolve") from exc
    for info in infos:
        # The host is a str for AF_INET / AF_INET6; an int only where Python lacks IPv6 support.
        host_ip = info[4][0]
        address = ipaddress.ip_address(host_ip.split("%")[0]) if isinstance(host_ip, str) else None
        if address is None or not address.is_global or address.is_multicast:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "input image URLs must point to public hosts")


def _decode_data_url(url: str) -> bytes:
    _header, _, payload = url.partition(",")
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError as exc:
        raise ProviderError(ErrorCode.INVALID_REQUEST, "an input image is not valid base64") from exc


def is_client_url(ref: gen.InputImage) -> bool:
    """An http(s) URL the client gave (not a stored upload): upstreams may fetch it themselves."""
    return ref.url.startswith(("http://", "https://")) and not ref.object_key


def images_of(generation: gen.Generation, role: str = "image") -> list[gen.InputImage]:
    """The inputs with that role ("" counts as "image"); params.image_url counts as one image."""
    found = [i for i in generation.params.input_images if (i.role or "image") == role]
    if role == "image" and not found and generation.params.image_url:
        found = [gen.InputImage(url=generation.params.image_url)]
    return found

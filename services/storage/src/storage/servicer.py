"""gRPC adapter of `ImageStore`: stream framing and error mapping only, no storage logic."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from datetime import timedelta

import grpc
from google.protobuf import duration_pb2

from pixelmesh.storage.v1 import storage_service_pb2 as pb
from pixelmesh.storage.v1 import storage_service_pb2_grpc
from storage.core import DEFAULT_CHUNK_SIZE, ImageStore
from svckit.errors import GatewayError, abort_with, invalid

MAX_IMAGE_BYTES = 50 * 1024 * 1024


class StorageServicer(storage_service_pb2_grpc.StorageServiceServicer):
    def __init__(self, store: ImageStore, *, max_image_bytes: int = MAX_IMAGE_BYTES) -> None:
        self._store = store
        self._max_image_bytes = max_image_bytes

    async def _read_upload(self, requests: AsyncIterable) -> tuple:
        """Header first, then chunks; the size cap is enforced while reading, not after.

        Serves PutImage and PutInputImage, whose requests have the same `header | chunk` shape.
        """
        header = None
        data = bytearray()
        async for req in requests:
            part = req.WhichOneof("part")
            if header is None:
                if part != "header":
                    raise invalid("the first PutImage message must carry the header", "header")
                header = req.header
            elif part == "header":
                raise invalid("PutImage carries exactly one header, in the first message", "header")
            else:
                data += req.chunk
                if len(data) > self._max_image_bytes:
                    raise invalid(f"image is larger than {self._max_image_bytes} bytes", "chunk")
        if header is None:
            raise invalid("PutImage stream is empty; the first message must carry the header", "header")
        return header, bytes(data)

    async def PutImage(
        self, request_iterator: AsyncIterable[pb.PutImageRequest], context: grpc.aio.ServicerContext
    ) -> pb.PutImageResponse:
        try:
            header, data = await self._read_upload(request_iterator)
            image = await self._store.put_image(header, data)
        except GatewayError as err:
            await abort_with(context, err)
        return pb.PutImageResponse(image=image)

    async def PutInputImage(
        self, request_iterator: AsyncIterable[pb.PutInputImageRequest], context: grpc.aio.ServicerContext
    ) -> pb.PutInputImageResponse:
        try:
            header, data = await self._read_upload(request_iterator)
            image = await self._store.put_input(header, data)
        except GatewayError as err:
            await abort_with(context, err)
        return pb.PutInputImageResponse(image=image)

    async def GetImage(
        self, request: pb.GetImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GetImageResponse]:
        try:
            image = await self._store.open_image(request.object_key, DEFAULT_CHUNK_SIZE)
        except GatewayError as err:
            await abort_with(context, err)
            return
        async with image:
            first = True
            try:
                async for chunk in image:
                    yield pb.GetImageResponse(chunk=chunk, mime_type=image.mime_type if first else "")
                    first = False
            except GatewayError as err:
                await abort_with(context, err)
            if first:  # an empty object still tells its type
                yield pb.GetImageResponse(mime_type=image.mime_type)

    async def GetImageUrl(
        self, request: pb.GetImageUrlRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetImageUrlResponse:
        expires: timedelta | None = None
        if request.HasField("expires_in"):
            expires = request.expires_in.ToTimedelta()
        try:
            url, valid = self._store.presigned_url(request.object_key, expires)
        except GatewayError as err:
            await abort_with(context, err)
        expires_in = duration_pb2.Duration()
        expires_in.FromTimedelta(valid)
        return pb.GetImageUrlResponse(url=url, expires_in=expires_in)

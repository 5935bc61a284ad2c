"""The storage servicer on a real grpc.aio server against a real MinIO (see conftest.py)."""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import timedelta
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pixelmesh.common.v1 import generation_pb2
from pixelmesh.storage.v1 import storage_service_pb2 as pb
from pixelmesh.storage.v1 import storage_service_pb2_grpc
from storage import core
from storage.core import ImageStore
from storage.servicer import MAX_IMAGE_BYTES, StorageServicer
from svckit.errors import ErrorCode, GatewayError, from_rpc_error

PNG = generation_pb2.OUTPUT_FORMAT_PNG
JPEG = generation_pb2.OUTPUT_FORMAT_JPEG
CHUNK = 256 * 1024


def image_bytes(size: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + os.urandom(size - 8)


def header(gen: str, *, index: int = 0, retention: str = "days-7", fmt: int = PNG) -> pb.PutImageHeader:
    return pb.PutImageHeader(
        generation_id=gen, index=index, retention_class=retention, output_format=fmt, width=1024, height=768
    )


async def upload(msgs: Iterable[pb.PutImageRequest]) -> AsyncIterator[pb.PutImageRequest]:
    for m in msgs:
        yield m


def put_stream(hdr: pb.PutImageHeader, data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[pb.PutImageRequest]:
    parts = [pb.PutImageRequest(header=hdr)]
    parts += [pb.PutImageRequest(chunk=data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return upload(parts)


@pytest.fixture(scope="module")
def public_endpoint(minio_server: tuple[str, str, str]) -> str:
    # Same server, other name: proves URLs are signed for the public address, not the internal one.
    return "http://localhost:" + minio_server[0].rsplit(":", 1)[1]


@pytest.fixture(scope="module")
def admin(minio_server: tuple[str, str, str]) -> Minio:
    endpoint, access, secret = minio_server
    return Minio(endpoint, access, secret, secure=False)


@pytest.fixture(scope="module")
async def store(minio_server: tuple[str, str, str], public_endpoint: str) -> ImageStore:
    endpoint, access, secret = minio_server
    s = ImageStore(
        endpoint=endpoint,
        access_key=access,
        secret_key=secret,
        public_endpoint=public_endpoint,
        bucket=f"pixelmesh-test-{uuid.uuid4().hex[:8]}",
    )
    await s.ensure_bucket()
    return s


@pytest.fixture(scope="module")
async def stub(store: ImageStore) -> AsyncIterator[storage_service_pb2_grpc.StorageServiceStub]:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    storage_service_pb2_grpc.add_StorageServiceServicer_to_server(StorageServicer(store), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield storage_service_pb2_grpc.StorageServiceStub(chan)
    await server.stop(0)


async def get_image(stub: storage_service_pb2_grpc.StorageServiceStub, key: str) -> list[pb.GetImageResponse]:
    return [msg async for msg in stub.GetImage(pb.GetImageRequest(object_key=key))]


async def test_put_then_get_round_trip(stub: storage_service_pb2_grpc.StorageServiceStub) -> None:
    gen = uuid.uuid4().hex
    data = image_bytes(700 * 1024 + 5)
    resp = await stub.PutImage(put_stream(header(gen, index=2), data))
    ref = resp.image
    assert ref.object_key == f"days-7/{gen}/2.png"
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert (ref.size_bytes, ref.index, ref.width, ref.height) == (len(data), 2, 1024, 768)
    assert (ref.output_format, ref.mime_type) == (PNG, "image/png")

    msgs = await get_image(stub, ref.object_key)
    assert b"".join(m.chunk for m in msgs) == data
    assert len(msgs) == math.ceil(len(data) / CHUNK)
    assert all(len(m.chunk) <= CHUNK for m in msgs)
    assert [m.mime_type for m in msgs] == ["image/png"] + [""] * (len(msgs) - 1)


async def test_put_is_idempotent(stub: storage_service_pb2_grpc.StorageServiceStub, store: ImageStore,
                                 admin: Minio) -> None:  # fmt: skip
    gen = uuid.uuid4().hex
    data = image_bytes(10_000)
    first = await stub.PutImage(put_stream(header(gen, retention="forever", fmt=JPEG), data))
    again = await stub.PutImage(put_stream(header(gen, retention="forever", fmt=JPEG), data, chunk=999))
    assert first == again
    assert first.image.object_key == f"forever/{gen}/0.jpg"
    assert first.image.mime_type == "image/jpeg"

    # A redelivered job with other bytes overwrites the one key, never adds a second object.
    other = image_bytes(5_000)
    third = await stub.PutImage(put_stream(header(gen, retention="forever", fmt=JPEG), other))
    assert third.image.object_key == first.image.object_key
    assert b"".join(m.chunk for m in await get_image(stub, third.image.object_key)) == other
    names = [o.object_name for o in admin.list_objects(store.bucket, prefix=f"forever/{gen}/", recursive=True)]
    assert names == [first.image.object_key]
    stat = admin.stat_object(store.bucket, first.image.object_key)
    assert stat.content_type == "image/jpeg"
    assert stat.metadata["x-amz-meta-sha256"] == hashlib.sha256(other).hexdigest()


async def test_presigned_url_downloads_over_http(stub: storage_service_pb2_grpc.StorageServiceStub,
                                                 public_endpoint: str, store: ImageStore) -> None:  # fmt: skip
    gen = uuid.uuid4().hex
    data = image_bytes(300_000)
    ref = (await stub.PutImage(put_stream(header(gen, retention="days-30"), data))).image

    resp = await stub.GetImageUrl(pb.GetImageUrlRequest(object_key=ref.object_key))
    assert resp.expires_in.ToTimedelta() == timedelta(hours=1)
    url = urlsplit(resp.url)
    assert f"{url.scheme}://{url.netloc}" == public_endpoint
    assert url.path == f"/{store.bucket}/{ref.object_key}"
    async with httpx.AsyncClient() as http:
        got = await http.get(resp.url)
        assert got.status_code == 200
        assert got.content == data
        assert got.headers["content-type"] == "image/png"
        # The signature covers the host: the same URL sent to another host name is refused.
        internal = resp.url.replace(url.netloc, "127.0.0.1:" + str(url.port))
        assert (await http.get(internal)).status_code == 403

    month = duration_pb2.Duration(seconds=30 * 24 * 3600)
    capped = await stub.GetImageUrl(pb.GetImageUrlRequest(object_key=ref.object_key, expires_in=month))
    assert capped.expires_in.seconds == 7 * 24 * 3600


async def test_lifecycle_rules_on_bucket(store: ImageStore, admin: Minio) -> None:
    def rules() -> dict[str, tuple[str, int]]:
        config = admin.get_bucket_lifecycle(store.bucket)
        assert config is not None
        return {r.rule_id: (r.rule_filter.prefix, r.expiration.days) for r in config.rules}

    ours = {
        "pixelmesh-retention-days-7": ("days-7/", 7),
        "pixelmesh-retention-days-30": ("days-30/", 30),
        "pixelmesh-retention-days-90": ("days-90/", 90),
    }
    assert rules() == ours
    await store.ensure_bucket()  # idempotent
    assert rules() == ours

    # An operator's own rule survives a restart; a stale rule of ours is corrected.
    operator = Rule(ENABLED, rule_filter=Filter(prefix="tmp/"), rule_id="operator-tmp", expiration=Expiration(days=1))
    stale = Rule(ENABLED, rule_filter=Filter(prefix="days-7/"), rule_id="pixelmesh-retention-days-7",
                 expiration=Expiration(days=70))  # fmt: skip
    kept = [r for r in admin.get_bucket_lifecycle(store.bucket).rules if r.rule_id != stale.rule_id]
    admin.set_bucket_lifecycle(store.bucket, LifecycleConfig([*kept, stale, operator]))
    await store.ensure_bucket()
    assert rules() == {**ours, "operator-tmp": ("tmp/", 1)}


async def test_unknown_key_is_not_found(stub: storage_service_pb2_grpc.StorageServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get_image(stub, f"days-90/{uuid.uuid4().hex}/0.png")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert from_rpc_error(info.value).code is ErrorCode.NOT_FOUND


async def test_malformed_key_is_invalid(stub: storage_service_pb2_grpc.StorageServiceStub) -> None:
    for call in (
        lambda: get_image(stub, "../../etc/passwd"),
        lambda: stub.GetImageUrl(pb.GetImageUrlRequest(object_key="days-7/g/0.exe")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert from_rpc_error(info.value).param == "object_key"


@pytest.mark.parametrize(
    "msgs",
    [
        pytest.param([pb.PutImageRequest(chunk=b"\x89PNG")], id="chunk-first"),
        pytest.param([], id="empty-stream"),
        pytest.param(
            [pb.PutImageRequest(header=header("g")), pb.PutImageRequest(header=header("g"))], id="two-headers"
        ),
        pytest.param([pb.PutImageRequest(header=header("g"))], id="no-bytes"),
        pytest.param(
            [pb.PutImageRequest(header=header("g", retention="days-1")), pb.PutImageRequest(chunk=b"x")],
            id="bad-retention",
        ),  # fmt: skip
    ],
)
async def test_bad_put_stream_is_invalid_argument(stub: storage_service_pb2_grpc.StorageServiceStub,
                                                  msgs: list[pb.PutImageRequest]) -> None:  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.PutImage(upload(msgs))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert from_rpc_error(info.value).code is ErrorCode.INVALID_REQUEST


async def test_oversized_image_is_refused(stub: storage_service_pb2_grpc.StorageServiceStub, admin: Minio,
                                          store: ImageStore) -> None:  # fmt: skip
    gen = uuid.uuid4().hex
    mib = b"\0" * (1024 * 1024)
    msgs = [pb.PutImageRequest(header=header(gen))] + [pb.PutImageRequest(chunk=mib)] * (MAX_IMAGE_BYTES // len(mib))
    msgs.append(pb.PutImageRequest(chunk=b"!"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.PutImage(upload(msgs))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "larger than" in (info.value.details() or "")
    assert not list(admin.list_objects(store.bucket, prefix=f"days-7/{gen}/"))

    # Exactly at the cap is accepted.
    ok = await stub.PutImage(upload(msgs[:-1]))
    assert ok.image.size_bytes == MAX_IMAGE_BYTES


async def test_s3_spans(store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(core, "_tracer", provider.get_tracer("pixelmesh.storage"))

    gen = uuid.uuid4().hex
    ref = await store.put_image(header(gen), image_bytes(1000))
    async with await store.open_image(ref.object_key) as image:
        assert len(b"".join([c async for c in image])) == 1000
    with pytest.raises(GatewayError):
        await store.open_image(f"days-7/{gen}/9.png")

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"s3 PutObject", "s3 GetObject"}
    put = spans["s3 PutObject"]
    assert put.attributes["pixelmesh.generation.id"] == gen
    assert put.attributes["pixelmesh.object.key"] == ref.object_key
    got = [s for s in exporter.get_finished_spans() if s.name == "s3 GetObject"]
    assert [s.status.is_ok for s in got] == [True, False]
    assert got[0].attributes["pixelmesh.object.size"] == 1000


async def test_store_down_is_unavailable(free_port: Callable[[], int]) -> None:
    down = ImageStore(
        endpoint=f"127.0.0.1:{free_port()}", access_key="a", secret_key="b", public_endpoint="http://x.invalid"
    )
    assert await down.ping() is False
    with pytest.raises(GatewayError) as info:
        await down.put_image(header("g"), b"x")
    assert info.value.code is ErrorCode.UNAVAILABLE


async def test_input_uploads_are_stored_under_their_upload_id(
    stub: storage_service_pb2_grpc.StorageServiceStub,
) -> None:
    data = image_bytes(300 * 1024)
    hdr = pb.PutInputImageHeader(
        upload_id="upl_01TEST", index=1, retention_class="days-30", format=PNG, role="mask", width=64, height=64
    )
    parts = [pb.PutInputImageRequest(header=hdr)]
    parts += [pb.PutInputImageRequest(chunk=data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    resp = await stub.PutInputImage(upload(parts))
    assert resp.image.object_key == "days-30/uploads/upl_01TEST/1.png"
    assert (resp.image.mime_type, resp.image.role) == ("image/png", "mask")
    assert b"".join(m.chunk for m in await get_image(stub, resp.image.object_key)) == data
    assert (
        "uploads/upl_01TEST/1.png"
        in (await stub.GetImageUrl(pb.GetImageUrlRequest(object_key=resp.image.object_key))).url
    )


@pytest.mark.parametrize(("field", "value", "param"), [("upload_id", "gen_1", "upload_id"), ("role", "logo", "role")])
async def test_input_uploads_are_checked(
    stub: storage_service_pb2_grpc.StorageServiceStub, field: str, value: str, param: str
) -> None:
    hdr = pb.PutInputImageHeader(upload_id="upl_1", index=0, retention_class="days-7", format=PNG, role="image")
    setattr(hdr, field, value)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.PutInputImage(upload([pb.PutInputImageRequest(header=hdr), pb.PutInputImageRequest(chunk=b"x")]))
    assert from_rpc_error(exc.value).param == param

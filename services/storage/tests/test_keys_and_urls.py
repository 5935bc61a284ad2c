"""Key layout, validation, settings and URL signing: no server needed."""

from __future__ import annotations

import socket
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from pixelmesh.common.v1 import generation_pb2
from pixelmesh.storage.v1 import storage_service_pb2 as pb
from storage.core import ImageStore, build_key, lifecycle_rules, parse_key
from storage.settings import StorageSettings
from svckit.errors import ErrorCode, GatewayError

PNG = generation_pb2.OUTPUT_FORMAT_PNG
WEBP = generation_pb2.OUTPUT_FORMAT_WEBP
JPEG = generation_pb2.OUTPUT_FORMAT_JPEG


@pytest.mark.parametrize(
    ("retention", "gen", "index", "fmt", "key"),
    [
        ("days-7", "gen_01", 0, PNG, "days-7/gen_01/0.png"),
        ("days-30", "A-b_9", 3, WEBP, "days-30/A-b_9/3.webp"),
        ("days-90", "x" * 64, 9999, JPEG, f"days-90/{'x' * 64}/9999.jpg"),
        ("forever", "g", 12, JPEG, "forever/g/12.jpg"),
    ],
)
def test_key_round_trip(retention: str, gen: str, index: int, fmt: int, key: str) -> None:
    built = build_key(retention, gen, index, fmt)
    assert str(built) == key
    assert parse_key(key) == built


def test_upload_keys_round_trip_and_stay_apart_from_generations() -> None:
    built = build_key("days-7", "upl_01", 2, WEBP, upload=True)
    assert str(built) == "days-7/uploads/upl_01/2.webp"
    assert parse_key("days-7/uploads/upl_01/2.webp") == built
    assert parse_key("days-7/uploads/0.png").generation_id == "uploads" and not parse_key("days-7/uploads/0.png").upload


def test_jpeg_mime_and_extension() -> None:
    key = build_key("days-7", "g", 0, JPEG)
    assert (key.ext, key.mime_type) == ("jpg", "image/jpeg")


@pytest.mark.parametrize(
    ("retention", "gen", "index", "fmt", "param"),
    [
        ("days-1", "g", 0, PNG, "retention_class"),
        ("", "g", 0, PNG, "retention_class"),
        ("days-7", "", 0, PNG, "generation_id"),
        ("days-7", "../etc", 0, PNG, "generation_id"),
        ("days-7", "a/b", 0, PNG, "generation_id"),
        ("days-7", "x" * 65, 0, PNG, "generation_id"),
        ("days-7", "g", -1, PNG, "index"),
        ("days-7", "g", 10000, PNG, "index"),
        ("days-7", "g", 0, generation_pb2.OUTPUT_FORMAT_UNSPECIFIED, "output_format"),
        ("days-7", "g", 0, 42, "output_format"),
    ],
)
def test_build_key_rejects(retention: str, gen: str, index: int, fmt: int, param: str) -> None:
    with pytest.raises(GatewayError) as info:
        build_key(retention, gen, index, fmt)
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert info.value.param == param


@pytest.mark.parametrize(
    "key",
    [
        "",
        "days-7/g/0",
        "days-7/g/0.jpeg",
        "days-7/g/0.gif",
        "days-7/g/01.png",
        "days-7/g/-1.png",
        "/days-7/g/0.png",
        "days-7/g/0.png/",
        "days-7//0.png",
        "days-14/g/0.png",
        "days-7/../0.png",
        "days-7/g/h/0.png",
        "other-bucket-prefix/g/0.png",
    ],
)
def test_parse_key_rejects(key: str) -> None:
    with pytest.raises(GatewayError) as info:
        parse_key(key)
    assert info.value.code is ErrorCode.INVALID_REQUEST


def test_lifecycle_rules_one_per_expiring_class() -> None:
    rules = {r.rule_filter.prefix: r.expiration.days for r in lifecycle_rules()}
    assert rules == {"days-7/": 7, "days-30/": 30, "days-90/": 90}
    assert len({r.rule_id for r in lifecycle_rules()}) == 3


# --- settings -------------------------------------------------------------------------

REQUIRED = {
    "STORAGE_ENDPOINT": "minio.internal:9000",
    "STORAGE_ACCESS_KEY": "ak",
    "STORAGE_SECRET_KEY": "sk",
    "STORAGE_PUBLIC_ENDPOINT": "https://images.example.com/",
}


@pytest.fixture
def storage_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("SERVICE_NAME", "GRPC_PORT", "STORAGE_SECURE", "STORAGE_REGION", "STORAGE_BUCKET",
                 "STORAGE_URL_EXPIRY_SECONDS", *REQUIRED):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_settings_defaults(storage_env: pytest.MonkeyPatch) -> None:
    s = StorageSettings()
    assert (s.service_name, s.grpc_port) == ("storage", 50053)
    assert (s.storage_secure, s.storage_region, s.storage_bucket) == (False, "us-east-1", "pixelmesh-images")
    assert s.storage_url_expiry_seconds == 3600
    assert s.storage_public_endpoint == "https://images.example.com"


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_settings_required(storage_env: pytest.MonkeyPatch, missing: str) -> None:
    storage_env.delenv(missing)
    with pytest.raises(ValidationError, match=missing.lower()):
        StorageSettings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STORAGE_ENDPOINT", "http://minio:9000"),
        ("STORAGE_PUBLIC_ENDPOINT", "minio:9000"),
        ("STORAGE_PUBLIC_ENDPOINT", "http://cdn.example.com/s3"),
        ("STORAGE_BUCKET", "Images_Bucket"),
        ("STORAGE_BUCKET", "ab"),
        ("STORAGE_URL_EXPIRY_SECONDS", "604801"),
        ("STORAGE_URL_EXPIRY_SECONDS", "0"),
    ],
)
def test_settings_rejects(storage_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    storage_env.setenv(name, value)
    with pytest.raises(ValidationError):
        StorageSettings()


# --- presigned URLs ------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Presigning must be pure computation: any connection attempt fails the test."""

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("presigning tried to open a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def make_store(public: str = "https://images.example.invalid", **kw: object) -> ImageStore:
    return ImageStore(
        endpoint="minio.internal.invalid:9000",
        access_key="ak",
        secret_key="sk",
        public_endpoint=public,
        region="eu-central-1",
        **kw,  # type: ignore[arg-type]
    )


def test_presigned_url_is_for_public_endpoint(no_network: None) -> None:
    url, valid = make_store().presigned_url("days-30/gen1/0.png")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert (parts.scheme, parts.netloc) == ("https", "images.example.invalid")
    assert parts.path == "/pixelmesh-images/days-30/gen1/0.png"
    assert valid == timedelta(hours=1)
    assert query["X-Amz-Expires"] == ["3600"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Credential"][0].startswith("ak/") and "/eu-central-1/s3/" in query["X-Amz-Credential"][0]
    assert query["X-Amz-SignedHeaders"] == ["host"]
    assert len(query["X-Amz-Signature"][0]) == 64


def test_presigned_url_plain_http_with_port(no_network: None) -> None:
    url, _ = make_store("http://127.0.0.1:9000", bucket="imgs").presigned_url("forever/g/1.jpg")
    assert url.startswith("http://127.0.0.1:9000/imgs/forever/g/1.jpg?")


@pytest.mark.parametrize(
    ("asked", "signed"),
    [
        (None, 600),
        (timedelta(0), 600),
        (timedelta(seconds=30), 30),
        (timedelta(seconds=1.2), 2),
        (timedelta(days=7), 604800),
        (timedelta(days=30), 604800),
    ],
)
def test_presigned_url_expiry(no_network: None, asked: timedelta | None, signed: int) -> None:
    url, valid = make_store(url_expiry=timedelta(minutes=10)).presigned_url("days-7/g/0.webp", asked)
    assert valid == timedelta(seconds=signed)
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(signed)]


def test_presigned_url_rejects_bad_input(no_network: None) -> None:
    store = make_store()
    with pytest.raises(GatewayError) as info:
        store.presigned_url("days-7/g/0.webp", timedelta(seconds=-1))
    assert info.value.param == "expires_in"
    with pytest.raises(GatewayError) as info:
        store.presigned_url("secrets/config.json")
    assert info.value.code is ErrorCode.INVALID_REQUEST


async def test_put_image_validates_before_any_io(no_network: None) -> None:
    store = make_store()
    header = pb.PutImageHeader(generation_id="g", index=0, retention_class="days-7", output_format=PNG)
    with pytest.raises(GatewayError, match="empty"):
        await store.put_image(header, b"")
    with pytest.raises(GatewayError) as info:
        await store.put_image(pb.PutImageHeader(generation_id="g", retention_class="weekly", output_format=PNG), b"x")
    assert info.value.param == "retention_class"

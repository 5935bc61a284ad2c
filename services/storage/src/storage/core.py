"""The object store: key layout, retention lifecycle rules, image bytes and presigned URLs.

Transport-free (no gRPC): the servicer adapts it, tests drive it directly. It speaks S3
through the synchronous `minio` SDK, called via `asyncio.to_thread` so the event loop
never blocks on the network.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.error import MinioException, S3Error
from minio.helpers import DictType
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from opentelemetry.trace import Span, Status, StatusCode

from pixelmesh.common.v1 import generation_pb2
from pixelmesh.storage.v1 import storage_service_pb2
from storage.settings import MAX_URL_EXPIRY_SECONDS, StorageSettings
from svckit import formats
from svckit.errors import ErrorCode, GatewayError, invalid
from svckit.logging import get_logger
from svckit.telemetry import tracer

# Retention class -> days before the lifecycle rule deletes the object (None: kept forever).
RETENTION_CLASSES: dict[str, int | None] = {"days-7": 7, "days-30": 30, "days-90": 90, "forever": None}


MAX_INDEX = 9999
LIFECYCLE_RULE_PREFIX = "pixelmesh-retention-"
DEFAULT_CHUNK_SIZE = 256 * 1024

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The index is written without leading zeros so that one image has exactly one key.
_KEY_RE = re.compile(
    r"(?P<retention>[a-z0-9-]+)/(?P<uploads>uploads/)?(?P<gen>[A-Za-z0-9_-]{1,64})/(?P<index>0|[1-9][0-9]{0,3})\.(?P<ext>[a-z]+)"
)
# Client uploads (edits, variations) live beside the generations of their retention class,
# so the same lifecycle rule expires them: <retention-class>/uploads/<upload-id>/<index>.<ext>.
UPLOADS = "uploads"
# What an upload is to its request: an image or a mask (edits), a Kling reference (subject,
# face), a Kolors try-on input (person, garment).
INPUT_ROLES = ("image", "mask", "subject", "face", "person", "garment")

_tracer = tracer("pixelmesh.storage")
log = get_logger(__name__)


@dataclass(frozen=True)
class ObjectKey:
    retention_class: str
    generation_id: str
    index: int
    output_format: generation_pb2.OutputFormat.ValueType
    upload: bool = False

    @property
    def ext(self) -> str:
        return formats.BY_ENUM[self.output_format].extension

    @property
    def mime_type(self) -> str:
        return formats.BY_ENUM[self.output_format].mime_type

    def __str__(self) -> str:
        folder = f"{UPLOADS}/{self.generation_id}" if self.upload else self.generation_id
        return f"{self.retention_class}/{folder}/{self.index}.{self.ext}"


# Images smaller than this are hashed on the event loop (about 1 ms per MB here).
INLINE_HASH_BYTES = 1024 * 1024


def build_key(
    retention_class: str,
    generation_id: str,
    index: int,
    output_format: generation_pb2.OutputFormat.ValueType,
    *,
    upload: bool = False,
) -> ObjectKey:
    """Validate the parts of an object key (GatewayError INVALID_REQUEST naming the bad one)."""
    if retention_class not in RETENTION_CLASSES:
        raise invalid(
            f"unknown retention class {retention_class!r}; expected one of {', '.join(RETENTION_CLASSES)}",
            "retention_class",
        )
    if not _ID_RE.fullmatch(generation_id):
        raise invalid("generation_id must be 1-64 characters of [A-Za-z0-9_-]", "generation_id")
    if not 0 <= index <= MAX_INDEX:
        raise invalid(f"index must be between 0 and {MAX_INDEX}", "index")
    if output_format not in formats.BY_ENUM:  # UNSPECIFIED is refused: the extension is part of the key
        raise invalid("output_format must be PNG, WEBP or JPEG", "output_format")
    return ObjectKey(retention_class, generation_id, index, output_format, upload)


def parse_key(key: str) -> ObjectKey:
    """The inverse of `str(ObjectKey)`; rejects anything this service would not have written."""
    m = _KEY_RE.fullmatch(key)
    if not m or m["ext"] not in formats.BY_EXTENSION:
        raise invalid(
            "object_key must look like <retention-class>/<generation-id>/<index>.<png|webp|jpg>", "object_key"
        )
    return build_key(
        m["retention"], m["gen"], int(m["index"]), formats.BY_EXTENSION[m["ext"]].enum, upload=bool(m["uploads"])
    )


def lifecycle_rules() -> list[Rule]:
    """One expiration rule per expiring retention class, matched by key prefix."""
    return [
        Rule(
            ENABLED,
            rule_filter=Filter(prefix=f"{cls}/"),
            rule_id=f"{LIFECYCLE_RULE_PREFIX}{cls}",
            expiration=Expiration(days=days),
        )
        for cls, days in RETENTION_CLASSES.items()
        if days is not None
    ]


def _rule_signature(rule: Rule) -> tuple[Any, ...]:
    prefix = rule.rule_filter.prefix if rule.rule_filter else None
    days = rule.expiration.days if rule.expiration else None
    return (rule.rule_id, rule.status, prefix, days)


@contextmanager
def _s3_errors(key: str | None = None) -> Iterator[None]:
    """Turn SDK and network failures into GatewayErrors the servicer can map to gRPC codes."""
    try:
        yield
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject") and key is not None:
            raise GatewayError(ErrorCode.NOT_FOUND, f"no image stored at {key}", param="object_key") from exc
        raise GatewayError(ErrorCode.INTERNAL, f"object store error: {exc.code}") from exc
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        # No ErrorCode names an unavailable internal dependency; UNAVAILABLE is the right gRPC code.
        raise GatewayError(ErrorCode.UNAVAILABLE, "object store unavailable", dependency="object-store") from exc


def _fail_span(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def _http_client() -> urllib3.PoolManager:
    """The SDK's default pool, but with short timeouts so readiness probes fail fast."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=60),
        maxsize=16,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


class ImageStream:
    """The bytes of one stored image. Iterate it once; `aclose()` (or `async with`) frees the connection."""

    def __init__(self, key: str, mime_type: str, size: int, response: Any, span: Span, chunk_size: int) -> None:
        self.key = key
        self.mime_type = mime_type
        self.size = size
        self._response = response
        self._span = span
        self._chunk_size = chunk_size
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while True:
                with _s3_errors(self.key):
                    block = await asyncio.to_thread(self._response.read, self._chunk_size)
                if not block:
                    return
                yield block
        except Exception as exc:
            _fail_span(self._span, exc)
            raise
        finally:
            self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._response.close()
            self._response.release_conn()
            self._span.end()

    async def aclose(self) -> None:
        self._close()

    async def __aenter__(self) -> ImageStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._close()


class ImageStore:
    """One bucket of generated images on MinIO or any S3-compatible store."""

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        public_endpoint: str,
        bucket: str = "pixelmesh-images",
        secure: bool = False,
        region: str = "us-east-1",
        url_expiry: timedelta = timedelta(hours=1),
    ) -> None:
        self.bucket = bucket
        self.url_expiry = url_expiry
        self._client = Minio(endpoint, access_key, secret_key, secure=secure, region=region, http_client=_http_client())
        # Presigned URLs embed the host they were signed for, so they are signed by a client
        # pointed at the public endpoint. With the region given, presigning is pure computation:
        # this client never opens a connection (the public address may not even resolve in-cluster).
        public = urlsplit(public_endpoint)
        self._signer = Minio(public.netloc, access_key, secret_key, secure=public.scheme == "https", region=region)

    @classmethod
    def from_settings(cls, s: StorageSettings) -> ImageStore:
        return cls(
            endpoint=s.storage_endpoint,
            access_key=s.storage_access_key,
            secret_key=s.storage_secret_key,
            public_endpoint=s.storage_public_endpoint,
            bucket=s.storage_bucket,
            secure=s.storage_secure,
            region=s.storage_region,
            url_expiry=timedelta(seconds=s.storage_url_expiry_seconds),
        )

    async def ensure_bucket(self) -> None:
        """Create the bucket if missing and install the retention rules; safe to repeat."""
        await asyncio.to_thread(self._ensure_bucket_sync)

    def _ensure_bucket_sync(self) -> None:
        with _s3_errors():
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket)
                    log.info("bucket created", bucket=self.bucket)
                except S3Error as exc:  # another replica won the race
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            current = self._client.get_bucket_lifecycle(self.bucket)
            # Rules we do not own (an operator's) are kept; ours are replaced by the current table.
            foreign = [
                r for r in (current.rules if current else []) if not (r.rule_id or "").startswith(LIFECYCLE_RULE_PREFIX)
            ]
            ours = lifecycle_rules()
            wanted = [*foreign, *ours]
            have = sorted(map(_rule_signature, current.rules)) if current else []
            if have != sorted(map(_rule_signature, wanted)):
                self._client.set_bucket_lifecycle(self.bucket, LifecycleConfig(wanted))
                log.info("lifecycle rules set", bucket=self.bucket, rules=[r.rule_id for r in ours])

    async def ping(self) -> bool:
        """Readiness: the store answers and the bucket exists (False, not an exception, otherwise)."""
        try:
            return await asyncio.to_thread(self._client.bucket_exists, self.bucket)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            log.debug("object store ping failed", error=repr(exc))
            return False

    async def put_image(self, header: storage_service_pb2.PutImageHeader, data: bytes) -> generation_pb2.ImageRef:
        """Store one image under its deterministic key (a repeated put overwrites it)."""
        key = build_key(header.retention_class, header.generation_id, header.index, header.output_format)
        return await self._put(key, header, data)

    async def _put(
        self, key: ObjectKey, header: storage_service_pb2.PutImageHeader, data: bytes
    ) -> generation_pb2.ImageRef:
        if not data:
            raise invalid("image is empty", "chunk")
        if header.width < 0 or header.height < 0:
            raise invalid("width and height must not be negative", "width")
        name = str(key)
        if len(data) < INLINE_HASH_BYTES:  # microseconds: cheaper than a hop to a thread
            sha256 = hashlib.sha256(data).hexdigest()
        else:
            sha256 = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        metadata: DictType = {
            "generation-id": key.generation_id,
            "index": str(key.index),
            "width": str(header.width),
            "height": str(header.height),
            "sha256": sha256,
        }
        with _tracer.start_as_current_span(
            "s3 PutObject",
            attributes={
                "pixelmesh.generation.id": key.generation_id,
                "pixelmesh.object.key": name,
                "pixelmesh.object.size": len(data),
            },
        ):
            with _s3_errors():
                await asyncio.to_thread(
                    self._client.put_object,
                    self.bucket,
                    name,
                    io.BytesIO(data),
                    len(data),
                    content_type=key.mime_type,
                    metadata=metadata,
                )
        return generation_pb2.ImageRef(
            object_key=name,
            index=key.index,
            width=header.width,
            height=header.height,
            output_format=key.output_format,
            mime_type=key.mime_type,
            size_bytes=len(data),
            sha256=sha256,
        )

    async def put_input(
        self, header: storage_service_pb2.PutInputImageHeader, data: bytes
    ) -> generation_pb2.InputImage:
        """Store one client upload under its upload id (a repeated put overwrites it)."""
        if not header.upload_id.startswith("upl_"):
            raise invalid("upload_id must start with 'upl_'", "upload_id")
        if header.role not in INPUT_ROLES:
            raise invalid(f"role must be one of {', '.join(INPUT_ROLES)}", "role")
        key = build_key(header.retention_class, header.upload_id, header.index, header.format, upload=True)
        put = storage_service_pb2.PutImageHeader(
            generation_id=header.upload_id,
            index=header.index,
            retention_class=header.retention_class,
            output_format=header.format,
            width=header.width,
            height=header.height,
        )
        ref = await self._put(key, put, data)
        return generation_pb2.InputImage(object_key=ref.object_key, mime_type=ref.mime_type, role=header.role)

    async def open_image(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> ImageStream:
        """Start reading an image (GatewayError NOT_FOUND if there is none at `key`)."""
        parsed = parse_key(key)
        span = _tracer.start_span(
            "s3 GetObject",
            attributes={"pixelmesh.generation.id": parsed.generation_id, "pixelmesh.object.key": key},
        )
        try:
            with _s3_errors(key):
                response = await asyncio.to_thread(self._client.get_object, self.bucket, key)
        except BaseException as exc:
            _fail_span(span, exc)
            span.end()
            raise
        size = int(response.headers.get("Content-Length") or 0)
        span.set_attribute("pixelmesh.object.size", size)
        mime = response.headers.get("Content-Type") or parsed.mime_type
        return ImageStream(key, mime, size, response, span, chunk_size)

    def presigned_url(self, key: str, expires: timedelta | None = None) -> tuple[str, timedelta]:
        """A GET URL for the public endpoint and the validity it was signed with.

        No I/O: the URL is computed, not checked against the store. `expires` defaults to
        the configured expiry, is rounded up to whole seconds and capped at 7 days (S3's limit).
        """
        parse_key(key)
        if expires is None or expires == timedelta(0):
            expires = self.url_expiry
        if expires < timedelta(0):
            raise invalid("expires_in must not be negative", "expires_in")
        seconds = min(math.ceil(expires.total_seconds()), MAX_URL_EXPIRY_SECONDS)
        valid = timedelta(seconds=seconds)
        return self._signer.presigned_get_object(self.bucket, key, expires=valid), valid

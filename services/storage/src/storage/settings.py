"""Settings of the storage service (environment variables, see docs/architecture.md "Configuration")."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from svckit.settings import ServiceSettings

# S3 (and so MinIO) refuses presigned URLs valid for longer than 7 days.
MAX_URL_EXPIRY_SECONDS = 7 * 24 * 3600


class StorageSettings(ServiceSettings):
    service_name: str = "storage"
    grpc_port: int = 50053

    # host:port of MinIO/S3 as reached from inside the mesh (no scheme).
    storage_endpoint: str
    storage_access_key: str
    storage_secret_key: str
    storage_secure: bool = False
    storage_region: str = "us-east-1"
    storage_bucket: str = Field(default="pixelmesh-images", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    # Base URL clients reach (scheme://host[:port]); presigned URLs are signed for it.
    storage_public_endpoint: str
    storage_url_expiry_seconds: int = Field(default=3600, ge=1, le=MAX_URL_EXPIRY_SECONDS)

    @field_validator("storage_endpoint")
    @classmethod
    def _host_port(cls, value: str) -> str:
        value = value.strip()
        if not value or "://" in value or "/" in value:
            raise ValueError("must be host:port without scheme or path (set STORAGE_SECURE for TLS)")
        return value

    @field_validator("storage_public_endpoint")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:9000")
        # The S3 SDK signs path-style URLs at the host root; a path prefix would break the signature.
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError("must be scheme://host[:port] with no path, query or credentials")
        return f"{parts.scheme}://{parts.netloc}"

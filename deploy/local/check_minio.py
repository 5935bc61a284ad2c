"""Check that the local MinIO works the way pixelmesh uses it.

    .venv/bin/python deploy/local/check_minio.py

Uses MINIO_PORT / MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (same defaults as
deploy/local/minio.sh). Makes a bucket, puts an object, fetches it through a
presigned GET URL with httpx, then removes both. Exits 0 with one line on success.
"""

from __future__ import annotations

import datetime
import io
import os
import sys
import time
import uuid

import httpx
from minio import Minio


def main() -> int:
    endpoint = f"127.0.0.1:{os.environ.get('MINIO_PORT', '9000')}"
    client = Minio(
        endpoint,
        access_key=os.environ.get("MINIO_ROOT_USER", "pixelmesh"),
        secret_key=os.environ.get("MINIO_ROOT_PASSWORD", "pixelmesh-dev-secret"),
        secure=False,
    )
    bucket = f"pixelmesh-check-{uuid.uuid4().hex[:8]}"
    key = "images/check.png"
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(1024)
    started = time.monotonic()
    step = "make_bucket"
    try:
        client.make_bucket(bucket)
        try:
            step = "put_object"
            client.put_object(bucket, key, io.BytesIO(data), len(data), content_type="image/png")
            step = "presigned get"
            url = client.presigned_get_object(bucket, key, expires=datetime.timedelta(minutes=5))
            resp = httpx.get(url, timeout=10)
            if resp.status_code != 200 or resp.content != data:
                raise AssertionError(f"presigned GET returned {resp.status_code}, {len(resp.content)} bytes")
            if resp.headers.get("content-type") != "image/png":
                raise AssertionError(f"content-type {resp.headers.get('content-type')!r}")
            step = "unsigned get is refused"
            plain = httpx.get(f"http://{endpoint}/{bucket}/{key}", timeout=10)
            if plain.status_code != 403:
                raise AssertionError(f"anonymous GET returned {plain.status_code}")
        finally:
            for obj in client.list_objects(bucket, recursive=True):
                client.remove_object(bucket, obj.object_name)
            client.remove_bucket(bucket)
    except Exception as exc:  # noqa: BLE001 - report and fail
        print(f"check_minio: FAILED against {endpoint} at step '{step}': {exc!r}", file=sys.stderr)
        return 1
    print(f"check_minio: OK against {endpoint} ({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

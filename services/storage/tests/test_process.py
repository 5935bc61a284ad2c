"""`python -m storage` as its own process: configuration errors, start-up, health, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc
from minio import Minio

from svckit.grpc_client import channel

SERVICE = "pixelmesh.storage.v1.StorageService"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "GRPC_", "METRICS_", "OTEL_"))}
    return {**env, **extra}


def test_missing_configuration_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "storage"], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    for name in ("STORAGE_ENDPOINT", "STORAGE_ACCESS_KEY", "STORAGE_SECRET_KEY", "STORAGE_PUBLIC_ENDPOINT"):
        assert f"{name}: required but not set" in proc.stderr


async def health(port: int) -> int | None:
    """The service's health status, or None while nothing listens."""
    async with channel(f"127.0.0.1:{port}") as chan:
        try:
            resp = await health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=1
            )
        except Exception:
            return None
        return resp.status


async def wait_for_health(port: int, want: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (status := await health(port)) != want:
        assert proc.poll() is None, "storage exited early"
        assert time.monotonic() < deadline, f"health stayed {status}, wanted {want}"
        await asyncio.sleep(0.2)


async def test_waits_for_minio_then_serves_and_stops_on_sigterm(
    tmp_path: Path, free_port: Callable[[], int], minio_launcher: Callable[..., Any]
) -> None:
    minio_port, grpc_port = free_port(), free_port()
    bucket = f"pixelmesh-proc-{uuid.uuid4().hex[:8]}"
    env = clean_env(
        STORAGE_ENDPOINT=f"127.0.0.1:{minio_port}",
        STORAGE_ACCESS_KEY="pixelmesh-test",
        STORAGE_SECRET_KEY="pixelmesh-test-secret",
        STORAGE_PUBLIC_ENDPOINT=f"http://localhost:{minio_port}",
        STORAGE_BUCKET=bucket,
        GRPC_PORT=str(grpc_port),
    )
    log_path = tmp_path / "storage.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "storage"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # MinIO is not up yet: the server listens but is not ready.
        await wait_for_health(grpc_port, health_pb2.HealthCheckResponse.NOT_SERVING, proc, timeout=30)
        await asyncio.sleep(1.5)
        assert await health(grpc_port) == health_pb2.HealthCheckResponse.NOT_SERVING

        endpoint, access, secret, _ = minio_launcher(tmp_path / "minio", port=minio_port)
        await wait_for_health(grpc_port, health_pb2.HealthCheckResponse.SERVING, proc, timeout=30)
        admin = Minio(endpoint, access, secret, secure=False)
        assert admin.bucket_exists(bucket)
        assert len(admin.get_bucket_lifecycle(bucket).rules) == 3

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    except BaseException:
        print(log_path.read_text(errors="replace")[-5000:])
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""Process wiring: settings -> ImageStore -> StorageServicer on a svckit GrpcService."""

from __future__ import annotations

import asyncio
import contextlib

from pixelmesh.storage.v1 import storage_service_pb2_grpc
from storage.core import ImageStore
from storage.servicer import StorageServicer
from storage.settings import StorageSettings
from svckit.errors import GatewayError
from svckit.logging import get_logger
from svckit.server import GrpcService, run
from svckit.settings import load_settings

log = get_logger(__name__)


async def ensure_bucket_forever(store: ImageStore, ready: asyncio.Event, max_delay: float = 10.0) -> None:
    """Set up the bucket and its lifecycle rules, retrying with backoff until the store answers."""
    delay = 0.5
    while True:
        try:
            await store.ensure_bucket()
        except Exception as exc:  # keep retrying whatever the failure; health says NOT_SERVING meanwhile
            cause = exc.__cause__ if isinstance(exc, GatewayError) else None
            log.warning("object store not ready, retrying", error=str(exc), cause=repr(cause), delay=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
        else:
            ready.set()
            return


async def serve(settings: StorageSettings) -> None:
    service = GrpcService(settings)
    store = ImageStore.from_settings(settings)
    service.add_servicer(
        storage_service_pb2_grpc.add_StorageServiceServicer_to_server,
        StorageServicer(store),
        "pixelmesh.storage.v1.StorageService",
    )

    # The bucket set-up runs in the background so the server listens (NOT_SERVING) and still
    # honours SIGTERM while the store is down; health turns SERVING once it has succeeded.
    bucket_ready = asyncio.Event()
    setup: list[asyncio.Task[None]] = []

    async def start() -> None:
        setup.append(asyncio.create_task(ensure_bucket_forever(store, bucket_ready)))

    async def stop() -> None:
        for task in setup:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def ready() -> bool:
        return bucket_ready.is_set() and await store.ping()

    service.on_start(start)
    service.on_stop(stop)
    service.readiness_check(ready)
    await service.run()


def main() -> None:
    run(serve(load_settings(StorageSettings)))

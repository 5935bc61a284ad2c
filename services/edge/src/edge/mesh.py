"""gRPC calls the edge makes to the rest of the mesh, with errors as GatewayErrors."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass

from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf.duration_pb2 import Duration

from edge.auth_cache import AuthCache
from edge.inputs import Upload
from edge.settings import EdgeSettings
from lifecycle import is_terminal
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.pricing.v1 import pricing_service_pb2 as pricing_pb
from pixelmesh.pricing.v1 import pricing_service_pb2_grpc
from pixelmesh.routing.v1 import routing_service_pb2 as routing_pb
from pixelmesh.routing.v1 import routing_service_pb2_grpc
from pixelmesh.status.v1 import status_service_pb2 as status_pb
from pixelmesh.status.v1 import status_service_pb2_grpc
from pixelmesh.storage.v1 import storage_service_pb2 as storage_pb
from pixelmesh.storage.v1 import storage_service_pb2_grpc
from svckit.accounts import account_metadata
from svckit.errors import ErrorCode, GatewayError, rpc_errors
from svckit.grpc_client import channel, is_serving
from svckit.ids import new_generation_id

# Set by routing on a submit answered with the generation an Idempotency-Key already made.
REPLAYED_METADATA = "pixelmesh-idempotent-replay"
CALL_TIMEOUT = 10.0
UPLOAD_CHUNK = 256 * 1024


def new_upload_id() -> str:
    """Id of one request's uploaded inputs (`upl_` + ULID): their storage prefix."""
    return "upl_" + new_generation_id().removeprefix("gen_")


@dataclass(frozen=True)
class Caller:
    account_id: str
    api_key_id: str
    plan: str
    retention_class: str


class Mesh:
    def __init__(self, settings: EdgeSettings) -> None:
        self._channels = {
            "routing": channel(settings.routing_addr),
            "pricing": channel(settings.pricing_addr),
            "status": channel(settings.status_addr),
            "storage": channel(settings.storage_addr),
        }
        self.routing = routing_service_pb2_grpc.RoutingServiceStub(self._channels["routing"])
        self.pricing = pricing_service_pb2_grpc.PricingServiceStub(self._channels["pricing"])
        self.status = status_service_pb2_grpc.StatusServiceStub(self._channels["status"])
        self.operations = operations_pb2_grpc.OperationsStub(self._channels["status"])
        self.storage = storage_service_pb2_grpc.StorageServiceStub(self._channels["storage"])
        self._callers = AuthCache(self._authenticate, settings.edge_auth_cache_seconds)

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()

    async def readiness(self) -> dict[str, bool]:
        names = list(self._channels)
        results = await asyncio.gather(*(is_serving(self._channels[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def authenticate(self, api_key: str) -> Caller:
        """The caller behind an API key (remembered briefly, see edge.auth_cache)."""
        return await self._callers.get(api_key)

    async def _authenticate(self, api_key: str) -> Caller:
        with rpc_errors():
            r = await self.pricing.Authenticate(pricing_pb.AuthenticateRequest(api_key=api_key), timeout=CALL_TIMEOUT)
        return Caller(r.account_id, r.api_key_id, r.plan, r.retention_class)

    async def submit(
        self, caller: Caller, params: gen.GenerationParams, *, idempotency_key: str = ""
    ) -> tuple[gen.Generation, bool]:
        """Submit; (the generation, True when the Idempotency-Key had already made it)."""
        request = routing_pb.SubmitGenerationRequest(
            params=params,
            account_id=caller.account_id,
            api_key_id=caller.api_key_id,
            retention_class=caller.retention_class,
            idempotency_key=idempotency_key,
        )
        with rpc_errors():
            call = self.routing.SubmitGeneration(request, timeout=CALL_TIMEOUT)
            op = await call
            metadata = await call.initial_metadata()
        generation = gen.Generation()
        op.metadata.Unpack(generation)
        replayed = any(k == REPLAYED_METADATA and v == "true" for k, v in metadata or ())
        return generation, replayed

    # Every read of status is made on behalf of the caller's account (svckit.accounts):
    # status answers another account's generation as NOT_FOUND, exactly like a missing one.

    async def generation(self, caller: Caller, generation_id: str) -> gen.Generation:
        """A generation of the caller's account; another account's is NOT_FOUND, like a missing one."""
        with rpc_errors():
            r = await self.status.GetGeneration(
                status_pb.GetGenerationRequest(generation_id=generation_id),
                metadata=account_metadata(caller.account_id),
                timeout=CALL_TIMEOUT,
                wait_for_ready=True,
            )
        return r.generation

    async def watch(self, caller: Caller, generation_id: str, timeout: float) -> AsyncIterator[gen.Generation]:
        """Every state of the generation until a terminal one; DEADLINE_EXCEEDED -> TIMEOUT."""
        # wait_for_ready: a poll or watch during a status restart waits for it (within the
        # deadline) instead of failing while the channel is still reconnecting.
        call = self.status.WatchGeneration(
            status_pb.WatchGenerationRequest(generation_id=generation_id),
            metadata=account_metadata(caller.account_id),
            timeout=timeout,
            wait_for_ready=True,
        )
        with rpc_errors():
            async for resp in call:
                yield resp.generation

    async def wait_terminal(self, caller: Caller, generation_id: str, timeout: float) -> gen.Generation:
        """The generation once it ended; TIMEOUT when it has not within `timeout` seconds.

        One WaitOperation call rather than a watch stream: a synchronous call needs only the
        end. A status restart meanwhile (UNAVAILABLE) is waited out within the same deadline."""
        metadata = account_metadata(caller.account_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            request = operations_pb2.WaitOperationRequest(
                name=f"generations/{generation_id}", timeout=Duration(seconds=int(left), nanos=int(left % 1 * 1e9))
            )
            try:
                with rpc_errors():
                    op = await self.operations.WaitOperation(
                        request, metadata=metadata, timeout=left + CALL_TIMEOUT, wait_for_ready=True
                    )
            except GatewayError as err:
                if err.code is not ErrorCode.UNAVAILABLE:
                    raise
                await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))
                continue
            generation = gen.Generation()
            op.metadata.Unpack(generation)
            if is_terminal(generation):
                return generation
        raise GatewayError(ErrorCode.TIMEOUT, f"generation {generation_id} did not end within {timeout:g} s")

    async def image_url(self, ref: gen.ImageRef) -> str:
        with rpc_errors():
            r = await self.storage.GetImageUrl(
                storage_pb.GetImageUrlRequest(object_key=ref.object_key), timeout=CALL_TIMEOUT
            )
        return r.url

    async def image_b64(self, ref: gen.ImageRef) -> str:
        chunks = []
        with rpc_errors():
            async for part in self.storage.GetImage(storage_pb.GetImageRequest(object_key=ref.object_key), timeout=60):
                chunks.append(part.chunk)
        return base64.b64encode(b"".join(chunks)).decode()

    async def list_models(self) -> list[routing_pb.Model]:
        with rpc_errors():
            r = await self.routing.ListModels(routing_pb.ListModelsRequest(), timeout=CALL_TIMEOUT)
        return list(r.models)

    async def get_model(self, model: str) -> routing_pb.Model:
        with rpc_errors():
            r = await self.routing.GetModel(routing_pb.GetModelRequest(model=model), timeout=CALL_TIMEOUT)
        return r.model

    async def validate(self, params: gen.GenerationParams) -> routing_pb.ValidateGenerationResponse:
        """Routing's catalog checks without submitting: the model's rules and the resolved request."""
        with rpc_errors():
            return await self.routing.ValidateGeneration(
                routing_pb.ValidateGenerationRequest(params=params), timeout=CALL_TIMEOUT
            )

    async def quote(self, model: str, size: str, quality: str, n: int) -> pricing_pb.QuotePriceResponse:
        """What pricing would charge; every QuotePrice call of the edge goes through here."""
        with rpc_errors():
            return await self.pricing.QuotePrice(
                pricing_pb.QuotePriceRequest(model=model, size=size, quality=quality, n=n), timeout=CALL_TIMEOUT
            )

    async def store_input(self, caller: Caller, upload_id: str, index: int, upload: Upload) -> gen.InputImage:
        """Store one uploaded image (edits, variations) before its job is queued."""
        header = storage_pb.PutInputImageHeader(
            upload_id=upload_id,
            index=index,
            retention_class=caller.retention_class,
            format=upload.format,
            role=upload.role,
            width=upload.width,
            height=upload.height,
        )

        async def parts() -> AsyncIterator[storage_pb.PutInputImageRequest]:
            yield storage_pb.PutInputImageRequest(header=header)
            for start in range(0, len(upload.data), UPLOAD_CHUNK):
                yield storage_pb.PutInputImageRequest(chunk=upload.data[start : start + UPLOAD_CHUNK])

        with rpc_errors():
            r = await self.storage.PutInputImage(parts(), timeout=60)
        return r.image

    async def generations(self, caller: Caller, generation_ids: list[str]) -> list[gen.Generation]:
        """Those of the generations that exist and belong to the caller's account, in order."""
        request = status_pb.BatchGetGenerationsRequest(generation_ids=generation_ids)
        with rpc_errors():
            r = await self.status.BatchGetGenerations(
                request, metadata=account_metadata(caller.account_id), timeout=CALL_TIMEOUT, wait_for_ready=True
            )
        return list(r.generations)

    async def cancel(self, caller: Caller, generation_id: str, reason: str) -> gen.Generation:
        """Cancel a generation of the caller's account (routing decides it); CONFLICT when it already ended."""
        request = routing_pb.CancelGenerationRequest(
            generation_id=generation_id, reason=reason, account_id=caller.account_id
        )
        with rpc_errors():
            r = await self.routing.CancelGeneration(request, timeout=2 * CALL_TIMEOUT)  # it waits for the kept state
        return r.generation

    async def webhook_secret(self, caller: Caller) -> str:
        with rpc_errors():
            r = await self.status.GetWebhookSecret(
                status_pb.GetWebhookSecretRequest(api_key_id=caller.api_key_id), timeout=CALL_TIMEOUT
            )
        return r.secret

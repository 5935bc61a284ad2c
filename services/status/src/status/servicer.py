"""StatusService and google.longrunning.Operations over the read model.

Every read and cancel is scoped to the account named in the call's metadata
(svckit.accounts): the edge names the API key's account, so one account can never read,
watch, list or cancel another's generations (they are NOT_FOUND); `*` reads every
account's, for an operator (its call carries the operator token, else UNAUTHENTICATED). A
call that names no account is refused with INVALID_ARGUMENT.
"""

from __future__ import annotations

import time

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2
from opentelemetry import trace

from lifecycle import is_terminal
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.routing.v1 import routing_service_pb2, routing_service_pb2_grpc
from pixelmesh.status.v1 import status_service_pb2 as pb
from pixelmesh.status.v1 import status_service_pb2_grpc
from presenters.generation import error_of
from status.core import GenerationStore
from status.webhooks import secret_for
from svckit.accounts import ACCOUNT_METADATA, ADMIN_TOKEN_METADATA, ALL_ACCOUNTS, is_operator, metadata_value
from svckit.errors import ErrorCode, GatewayError, abort_with, rpc_errors

OPERATION_PREFIX = "generations/"
MAX_WAIT_SECONDS = 600.0
MAX_BATCH = 500


def _annotate(generation_id: str) -> None:
    trace.get_current_span().set_attribute("pixelmesh.generation.id", generation_id)


def to_operation(generation: gen.Generation) -> operations_pb2.Operation:
    """AIP-151: progress in metadata; the result in `response`, or the failure in `error`."""
    op = operations_pb2.Operation(name=OPERATION_PREFIX + generation.id, done=is_terminal(generation))
    op.metadata.Pack(generation)
    if generation.state == gen.GENERATION_STATE_SUCCEEDED:
        op.response.Pack(generation)
    elif op.done:
        op.error.CopyFrom(error_of(generation).to_status())
    return op


class AccountScope:
    """Whose generations a call may read: the account its metadata names, or every account
    (`*`) for an operator, whose call also carries the operator token (svckit.accounts)."""

    def __init__(self, admin_token: str) -> None:
        self._admin_token = admin_token

    def of(self, context: grpc.aio.ServicerContext) -> str:
        """The account the call is made for; refused when unnamed, or `*` without the token."""
        metadata = context.invocation_metadata()
        account = metadata_value(metadata, ACCOUNT_METADATA)
        if not account:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST,
                f"Name the account this read is for in the '{ACCOUNT_METADATA}' metadata.",
                param=ACCOUNT_METADATA,
            )
        if account == ALL_ACCOUNTS and not is_operator(metadata, self._admin_token):
            raise GatewayError(
                ErrorCode.UNAUTHENTICATED,
                f"Reading every account's generations is an admin call: send the operator token "
                f"(PRICING_ADMIN_TOKEN) as '{ADMIN_TOKEN_METADATA}' metadata.",
            )
        return account


async def cancel_through_routing(
    routing: routing_service_pb2_grpc.RoutingServiceAsyncStub,
    context: grpc.aio.ServicerContext,
    scope: AccountScope,
    generation_id: str,
    reason: str = "",
) -> gen.Generation:
    """Status publishes no generation state: routing decides the cancel (routing.cancel). An
    operator's cancel (`*`) passes its token on: routing reads the generation back with it."""
    account = scope.of(context)
    request = routing_service_pb2.CancelGenerationRequest(
        generation_id=generation_id, reason=reason, account_id=account
    )
    token = metadata_value(context.invocation_metadata(), ADMIN_TOKEN_METADATA)
    metadata = ((ADMIN_TOKEN_METADATA, token),) if account == ALL_ACCOUNTS and token else ()
    with rpc_errors():
        r = await routing.CancelGeneration(request, metadata=metadata, timeout=20, wait_for_ready=True)
    return r.generation


def _generation_id(operation_name: str) -> str:
    if not operation_name.startswith(OPERATION_PREFIX):
        raise GatewayError(
            ErrorCode.INVALID_REQUEST, f"Operation names look like '{OPERATION_PREFIX}<id>'.", param="name"
        )
    return operation_name[len(OPERATION_PREFIX) :]


class StatusServicer(status_service_pb2_grpc.StatusServiceServicer):
    def __init__(
        self,
        store: GenerationStore,
        routing: routing_service_pb2_grpc.RoutingServiceAsyncStub,
        webhook_signing_key: str,
        scope: AccountScope,
    ) -> None:
        self._store = store
        self._routing = routing
        self._signing_key = webhook_signing_key
        self._scope = scope

    async def GetGeneration(
        self, request: pb.GetGenerationRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetGenerationResponse:
        _annotate(request.generation_id)
        try:
            return pb.GetGenerationResponse(
                generation=await self._store.get(request.generation_id, self._scope.of(context))
            )
        except GatewayError as err:
            await abort_with(context, err)

    async def BatchGetGenerations(
        self, request: pb.BatchGetGenerationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchGetGenerationsResponse:
        try:
            account = self._scope.of(context)
            if len(request.generation_ids) > MAX_BATCH:
                raise GatewayError(
                    ErrorCode.INVALID_REQUEST, f"At most {MAX_BATCH} ids at once.", param="generation_ids"
                )
        except GatewayError as err:
            await abort_with(context, err)
        found = (self._store.peek(i, account) for i in request.generation_ids)
        return pb.BatchGetGenerationsResponse(generations=[g for g in found if g is not None])

    async def CancelGeneration(
        self, request: pb.CancelGenerationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelGenerationResponse:
        _annotate(request.generation_id)
        try:
            cancelled = await cancel_through_routing(
                self._routing, context, self._scope, request.generation_id, request.reason
            )
        except GatewayError as err:
            await abort_with(context, err)
        return pb.CancelGenerationResponse(generation=cancelled)

    async def GetWebhookSecret(
        self, request: pb.GetWebhookSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetWebhookSecretResponse:
        if not request.api_key_id:
            await abort_with(
                context, GatewayError(ErrorCode.INVALID_REQUEST, "api_key_id is required.", param="api_key_id")
            )
        return pb.GetWebhookSecretResponse(secret=secret_for(self._signing_key, request.api_key_id))

    async def WatchGeneration(self, request: pb.WatchGenerationRequest, context: grpc.aio.ServicerContext):
        _annotate(request.generation_id)
        try:
            current = await self._store.get(request.generation_id, self._scope.of(context))
        except GatewayError as err:
            await abort_with(context, err)
        yield pb.WatchGenerationResponse(generation=current)
        while not is_terminal(current):
            latest = await self._store.newer_than(current.id, current.version, timeout=MAX_WAIT_SECONDS)
            if latest is not None and latest.version > current.version:
                current = latest
                yield pb.WatchGenerationResponse(generation=current)


class OperationsServicer(operations_pb2_grpc.OperationsServicer):
    def __init__(
        self, store: GenerationStore, routing: routing_service_pb2_grpc.RoutingServiceAsyncStub, scope: AccountScope
    ) -> None:
        self._store = store
        self._routing = routing
        self._scope = scope

    async def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.Operation:
        try:
            generation_id = _generation_id(request.name)
            _annotate(generation_id)
            return to_operation(await self._store.get(generation_id, self._scope.of(context)))
        except GatewayError as err:
            await abort_with(context, err)

    async def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.Operation:
        """Returns when the operation is done or the timeout (default and cap 10 min) passes."""
        timeout = MAX_WAIT_SECONDS
        if request.HasField("timeout"):
            timeout = min(request.timeout.ToTimedelta().total_seconds(), MAX_WAIT_SECONDS)
        deadline = time.monotonic() + timeout
        try:
            generation_id = _generation_id(request.name)
            _annotate(generation_id)
            current = await self._store.get(generation_id, self._scope.of(context))
            while not is_terminal(current) and (left := deadline - time.monotonic()) > 0:
                current = await self._store.newer_than(generation_id, current.version, left) or current
            return to_operation(current)
        except GatewayError as err:
            await abort_with(context, err)

    async def ListOperations(
        self, request: operations_pb2.ListOperationsRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.ListOperationsResponse:
        """The caller's account's operations (every account's with `*`), newest first."""
        try:
            account = self._scope.of(context)
        except GatewayError as err:
            await abort_with(context, err)
        page_size = min(request.page_size or 50, 500)
        page = self._store.list(account, page_size=page_size + 1, after_id=request.page_token)
        resp = operations_pb2.ListOperationsResponse(operations=[to_operation(g) for g in page[:page_size]])
        if len(page) > page_size:
            resp.next_page_token = page[page_size - 1].id
        return resp

    async def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """AIP-151 cancel; FAILED_PRECONDITION when the generation already ended."""
        try:
            generation_id = _generation_id(request.name)
            _annotate(generation_id)
            await cancel_through_routing(self._routing, context, self._scope, generation_id)
        except GatewayError as err:
            await abort_with(context, err)
        return empty_pb2.Empty()

    async def DeleteOperation(
        self, request: operations_pb2.DeleteOperationRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Generations are kept for their retention period.")

"""RoutingService: admission and dispatch of generations, and the catalog."""

from __future__ import annotations

import grpc
from google.longrunning import operations_pb2
from opentelemetry import trace

from bus import EVENTS_TOPIC, Producer, generation_event, requests_topic
from lifecycle import advance
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from pixelmesh.pricing.v1 import pricing_service_pb2, pricing_service_pb2_grpc
from pixelmesh.pricing.v1.pricing_service_pb2 import ReleaseReason
from pixelmesh.routing.v1 import routing_service_pb2 as pb
from pixelmesh.routing.v1 import routing_service_pb2_grpc
from routing.admission import admit, request_routes, validate
from routing.attempts import AttemptDecisions
from routing.cancel import Canceller
from routing.catalog import Catalog
from routing.idempotency import IdempotencyStore
from routing.routes import REROUTES, RoutePlanner, routes_for
from svckit.accounts import ADMIN_TOKEN_METADATA, ALL_ACCOUNTS, account_metadata, metadata_value, operator_metadata
from svckit.errors import ErrorCode, GatewayError, abort_with, invalid, rpc_errors
from svckit.logging import get_logger

log = get_logger(__name__)
PRODUCER = "routing"
# Initial metadata of a submit answered with the generation its Idempotency-Key already made.
REPLAYED_METADATA = "pixelmesh-idempotent-replay"


def operation_for(generation: gen.Generation) -> operations_pb2.Operation:
    op = operations_pb2.Operation(name=f"generations/{generation.id}", done=False)
    op.metadata.Pack(generation)
    return op


class RoutingServicer(routing_service_pb2_grpc.RoutingServiceServicer):
    def __init__(
        self,
        catalog: Catalog,
        pricing: pricing_service_pb2_grpc.PricingServiceAsyncStub,
        producer: Producer,
        planner: RoutePlanner,
        keys: IdempotencyStore,
        canceller: Canceller,
    ) -> None:
        self._catalog = catalog
        self._planner = planner
        self._pricing = pricing
        self._producer = producer
        self._keys = keys
        self._decisions = AttemptDecisions(planner)
        self._canceller = canceller

    async def SubmitGeneration(
        self, request: pb.SubmitGenerationRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.Operation:
        key = request.idempotency_key
        try:
            job = self._admit(request)
            generation = job.generation
            if key and (earlier := await self._keys.claim(generation, key)) is not None:
                await context.send_initial_metadata(((REPLAYED_METADATA, "true"),))
                return operation_for(earlier)
            try:
                await self._reserve(job)
                if key:
                    await self._keys.record(generation, key)
                await self._dispatch(job)
            except BaseException:
                if key:  # never dispatched: the client may retry with its key
                    await self._keys.forget(generation, key)
                raise
        except GatewayError as err:
            await abort_with(context, err)
        return operation_for(generation)

    def _admit(self, request: pb.SubmitGenerationRequest) -> events_pb2.GenerationJob:
        """The catalog's checks and the routes: the job as it will be queued, not yet priced."""
        params = request.params
        entry = self._catalog.get(params.model)
        size, quality, n = validate(entry, params)
        enabled = request_routes(entry, params, self._catalog.routes(entry))
        routes = self._planner.plan(routes_for(enabled, entry.route_weights))
        provider = routes[0]
        generation = admit(
            entry,
            provider,
            params,
            account_id=request.account_id,
            api_key_id=request.api_key_id,
            retention_class=request.retention_class or "days-7",
            cost=gen.Cost(),
            size=size,
            quality=quality,
            n=n,
        )
        first = generation.attempts.add(number=1, provider=provider)
        first.start_time.CopyFrom(generation.create_time)
        span = trace.get_current_span()
        span.set_attribute("pixelmesh.generation.id", generation.id)
        span.set_attribute("pixelmesh.model", entry.id)
        span.set_attribute("pixelmesh.provider", provider)
        return events_pb2.GenerationJob(generation=generation, routes=routes)

    async def _reserve(self, job: events_pb2.GenerationJob) -> None:
        """Pricing quotes it, checks the key's limits and the balance, and holds the cost."""
        with rpc_errors():
            reservation = await self._pricing.ReserveGeneration(
                pricing_service_pb2.ReserveGenerationRequest(generation=job.generation), timeout=10
            )
        job.generation.cost.CopyFrom(reservation.total)
        job.tariff.CopyFrom(reservation.tariff)

    async def _queue(self, job: events_pb2.GenerationJob) -> None:
        """QUEUED state (so status knows it) and the job for its provider pool, in this order
        and in one produce request."""
        generation = job.generation
        await self._producer.send_all(
            [
                (EVENTS_TOPIC, generation.id, generation_event(generation, PRODUCER)),
                (requests_topic(generation.provider), generation.id, job),
            ]
        )

    async def _dispatch(self, job: events_pb2.GenerationJob) -> None:
        """Queue an admitted generation; if the bus refuses, it fails and its reservation is released."""
        generation = job.generation
        try:
            await self._queue(job)
        except Exception as exc:
            log.error("could not dispatch generation", generation_id=generation.id, error=repr(exc))
            failed = advance(generation, gen.GENERATION_STATE_FAILED)
            failed.error.CopyFrom(gen.GenerationError(code=ErrorCode.UNAVAILABLE.value, message="dispatch failed"))
            try:
                await self._producer.send(EVENTS_TOPIC, failed.id, generation_event(failed, PRODUCER))
            except Exception:
                pass  # the queue is down; the QUEUED state (if it was written) stays and is reported as such
            await self._release(generation.id)
            raise GatewayError(ErrorCode.UNAVAILABLE, "The job queue is unavailable; try again.") from exc
        log.info("generation queued", generation_id=generation.id, model=generation.model, provider=generation.provider)

    async def _release(self, generation_id: str) -> None:
        """Give back the reservation of a generation that was never dispatched (best effort:
        pricing also releases reservations that outlive their TTL)."""
        try:
            await self._pricing.ReleaseGeneration(
                pricing_service_pb2.ReleaseGenerationRequest(
                    generation_id=generation_id, reason=ReleaseReason.RELEASE_REASON_NOT_DISPATCHED
                ),
                timeout=5,
            )
        except Exception as exc:
            log.error("could not release the reservation", generation_id=generation_id, error=repr(exc))

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[e.to_proto() for e in self._catalog.available()])

    async def ReportAttemptFailure(
        self, request: pb.ReportAttemptFailureRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportAttemptFailureResponse:
        """The worker reported; routing decides (routing.attempts) and publishes before it answers."""
        reported = request.job.generation
        try:
            decision, new = self._decisions.decide(request.job)
        except GatewayError as err:
            await abort_with(context, err)
        state = decision.state
        if new:
            try:
                if decision.provider is None:
                    await self._producer.send(EVENTS_TOPIC, state.id, generation_event(state, PRODUCER))
                else:
                    await self._queue(
                        events_pb2.GenerationJob(generation=state, tariff=request.job.tariff, routes=request.job.routes)
                    )
            except Exception as exc:
                self._decisions.forget(reported)
                log.error("could not publish a decision", generation_id=state.id, error=repr(exc))
                await abort_with(context, GatewayError(ErrorCode.UNAVAILABLE, "The job queue is unavailable."))
            if decision.provider is None:
                log.warning("generation failed", generation_id=state.id, code=state.error.code)
            else:
                REROUTES.labels(reported.provider, decision.provider).inc()
                log.info("generation sent to its next route", generation_id=state.id, provider=decision.provider)
        return pb.ReportAttemptFailureResponse(generation=state)

    async def CancelGeneration(
        self, request: pb.CancelGenerationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelGenerationResponse:
        trace.get_current_span().set_attribute("pixelmesh.generation.id", request.generation_id)
        if not request.account_id:
            await abort_with(context, invalid("Name the account the cancel is for ('*': any).", "account_id"))
        if request.account_id == ALL_ACCOUNTS:  # an operator's: status checks the token it passes on
            token = metadata_value(context.invocation_metadata(), ADMIN_TOKEN_METADATA)
            read_as = operator_metadata(token)
        else:
            read_as = account_metadata(request.account_id)
        try:
            cancelled = await self._canceller.cancel(request.generation_id, read_as, request.reason)
        except GatewayError as err:
            await abort_with(context, err)
        return pb.CancelGenerationResponse(generation=cancelled)

    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProvidersResponse:
        pools = []
        for provider in sorted(self._catalog.enabled_providers):
            health, report = self._planner.health.state(provider)
            pools.append(
                pb.ProviderPool(
                    name=provider,
                    models=[e.id for e in self._catalog.available() if provider in self._catalog.routes(e)],
                    health=health,
                    code=report.code if report else "",
                    reason=report.reason if report else "",
                    workers=len(self._planner.health.current(provider)),
                    circuit=self._planner.breaker.state(provider).value,
                )
            )
        return pb.ListProvidersResponse(providers=pools)

    async def GetModel(self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext) -> pb.GetModelResponse:
        try:
            return pb.GetModelResponse(model=self._catalog.get(request.model).to_proto())
        except GatewayError as err:
            await abort_with(context, err)

    async def ValidateGeneration(
        self, request: pb.ValidateGenerationRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateGenerationResponse:
        """SubmitGeneration's catalog checks alone: the edge asks before it stores uploads or quotes."""
        try:
            entry = self._catalog.get(request.params.model)
            size, quality, n = validate(entry, request.params)
            request_routes(entry, request.params, self._catalog.routes(entry))
        except GatewayError as err:
            await abort_with(context, err)
        width, height = entry.pixels(size)
        return pb.ValidateGenerationResponse(
            model=entry.to_proto(), size=size, quality=quality, n=n, width=width, height=height
        )

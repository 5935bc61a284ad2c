from bus import EVENTS_TOPIC, PROVIDER_HEALTH_TOPIC, Consumer, Producer, TopicReader, ensure_topics, requests_topic
from bus.topics import control_spec, dlq_spec, events_spec, provider_health_spec, requests_spec
from pixelmesh.events.v1 import events_pb2
from pixelmesh.pricing.v1 import pricing_service_pb2_grpc
from pixelmesh.routing.v1 import routing_service_pb2_grpc
from pixelmesh.status.v1 import status_service_pb2_grpc
from routing.attempts import OUTCOMES_GROUP, SuccessObserver, reports_success
from routing.cancel import Canceller
from routing.catalog import Catalog, CatalogError
from routing.health import ProviderHealthBoard
from routing.idempotency import SCHEMA, IdempotencyStore
from routing.routes import CircuitBreaker, RoutePlanner
from routing.servicer import RoutingServicer
from routing.settings import RoutingSettings
from sqlstore import open_database
from svckit.grpc_client import channel, is_serving
from svckit.periodic import Periodic
from svckit.server import GrpcService


async def serve(settings: RoutingSettings) -> None:
    service = GrpcService(settings)
    try:
        catalog = Catalog.load(settings.providers, settings.routing_catalog, settings.extra_catalogs)
    except CatalogError as exc:
        raise SystemExit(f"routing: invalid model catalog: {exc}") from None
    pricing_channel = channel(settings.pricing_addr)
    status_channel = channel(settings.status_addr)
    producer = Producer(settings.kafka_bootstrap_servers, client_id="routing")
    health = ProviderHealthBoard()
    planner = RoutePlanner(
        CircuitBreaker(settings.routing_circuit_failure_threshold, settings.routing_circuit_open_seconds),
        health=health,
    )
    health_reader = TopicReader(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=PROVIDER_HEALTH_TOPIC,
        message_type=events_pb2.ProviderHealth,
        handler=health.apply,
        client_id="routing-health",
        traced=False,
    )
    db = open_database(settings.routing_database_url)
    keys = IdempotencyStore(db, settings.routing_idempotency_ttl_seconds)
    pruner = Periodic("prune idempotency keys", keys.prune, 600.0, done="pruned expired idempotency keys")
    servicer = RoutingServicer(
        catalog,
        pricing_service_pb2_grpc.PricingServiceStub(pricing_channel),
        producer,
        planner,
        keys,
        Canceller(status_service_pb2_grpc.StatusServiceStub(status_channel), producer),
    )
    outcomes = Consumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=EVENTS_TOPIC,
        group_id=OUTCOMES_GROUP,
        message_type=events_pb2.GenerationEvent,
        handler=SuccessObserver(planner).handle,
        producer=producer,
        max_in_flight=16,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        client_id="routing-outcomes",
        auto_offset_reset="latest",  # old successes say nothing of the circuits now
        accept=reports_success,
        max_delay_seconds=2.0,  # a circuit may close a moment later
    )
    service.add_servicer(
        routing_service_pb2_grpc.add_RoutingServiceServicer_to_server, servicer, "pixelmesh.routing.v1.RoutingService"
    )

    async def create_topics() -> None:
        n = settings.kafka_partitions
        specs = [events_spec(n), control_spec(), provider_health_spec()]
        for provider in sorted(settings.providers):
            specs += [requests_spec(provider, n), dlq_spec(requests_topic(provider))]
        await ensure_topics(settings.kafka_bootstrap_servers, specs, settings.kafka_replication_factor)

    async def stop() -> None:
        await health_reader.stop()
        await pruner.stop()
        await outcomes.stop()
        await producer.stop()
        await pricing_channel.close()
        await status_channel.close()
        await db.close()

    service.on_start(lambda: SCHEMA.migrate(db))
    service.on_start(pruner.start)
    service.on_start(create_topics)
    service.on_start(producer.start)
    service.on_start(health_reader.start)
    service.on_start(outcomes.start)
    service.on_stop(stop)
    service.readiness_check(db.answers)
    service.readiness_check(producer.is_connected)
    service.readiness_check(lambda: is_serving(pricing_channel))
    await service.run()

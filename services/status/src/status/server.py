import httpx
from google.longrunning import operations_pb2_grpc

from bus import EVENTS_TOPIC, WEBHOOK_DELIVERIES_TOPIC, Consumer, Producer, Record, TopicReader, ensure_topics
from bus.topics import control_spec, events_spec, webhook_deliveries_spec
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from pixelmesh.routing.v1 import routing_service_pb2_grpc
from pixelmesh.status.v1 import status_service_pb2_grpc
from pixelmesh.storage.v1 import storage_service_pb2 as storage_pb
from pixelmesh.storage.v1 import storage_service_pb2_grpc
from status.core import GenerationStore
from status.servicer import AccountScope, OperationsServicer, StatusServicer
from status.settings import StatusSettings
from status.webhooks import GROUP, RetryPolicy, WebhookDispatcher, announces
from svckit.errors import rpc_errors
from svckit.grpc_client import channel
from svckit.server import GrpcService

# Webhooks waiting for their next attempt at once (each holds one consumer slot).
WEBHOOKS_IN_FLIGHT = 256


async def serve(settings: StatusSettings) -> None:
    service = GrpcService(settings)
    store = GenerationStore()
    producer = Producer(settings.kafka_bootstrap_servers, client_id="status")
    storage_channel = channel(settings.storage_addr)
    storage = storage_service_pb2_grpc.StorageServiceStub(storage_channel)
    routing_channel = channel(settings.routing_addr)  # cancels: routing decides them
    routing = routing_service_pb2_grpc.RoutingServiceStub(routing_channel)
    http = httpx.AsyncClient(follow_redirects=False)

    def apply(record: Record[events_pb2.GenerationEvent]) -> None:
        store.apply(record.message.generation)

    async def image_url(ref: gen.ImageRef) -> str:
        with rpc_errors():
            r = await storage.GetImageUrl(storage_pb.GetImageUrlRequest(object_key=ref.object_key), timeout=10)
        return r.url

    def apply_delivery(record: Record[events_pb2.WebhookDeliveryRecord]) -> None:
        store.apply_delivery(record.message.generation_id, record.message.delivery)

    reader = TopicReader(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=EVENTS_TOPIC,
        message_type=events_pb2.GenerationEvent,
        handler=apply,
        client_id="status",
    )
    deliveries = TopicReader(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=WEBHOOK_DELIVERIES_TOPIC,
        message_type=events_pb2.WebhookDeliveryRecord,
        handler=apply_delivery,
        client_id="status-deliveries",
    )
    dispatcher = WebhookDispatcher(
        store=store,
        producer=producer,
        image_url=image_url,
        signing_key=settings.webhook_signing_key,
        policy=RetryPolicy(
            settings.webhook_retry_seconds,
            settings.webhook_first_retry_seconds,
            settings.webhook_max_retry_interval_seconds,
        ),
        client=http,
        timeout_seconds=settings.webhook_timeout_seconds,
    )
    webhooks = Consumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=EVENTS_TOPIC,
        group_id=GROUP,
        message_type=events_pb2.GenerationEvent,
        handler=dispatcher.handle,
        producer=producer,
        max_in_flight=WEBHOOKS_IN_FLIGHT,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        client_id="status-webhooks",
        accept=announces,
        max_delay_seconds=1.0,  # a webhook leaves at most this much later
    )
    scope = AccountScope(settings.pricing_admin_token.get_secret_value())
    service.add_servicer(
        status_service_pb2_grpc.add_StatusServiceServicer_to_server,
        StatusServicer(store, routing, settings.webhook_signing_key, scope),
        "pixelmesh.status.v1.StatusService",
    )
    service.add_servicer(
        operations_pb2_grpc.add_OperationsServicer_to_server,
        OperationsServicer(store, routing, scope),
        "google.longrunning.Operations",
    )

    async def create_topics() -> None:
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [
                events_spec(settings.kafka_partitions),
                control_spec(),
                webhook_deliveries_spec(settings.kafka_partitions),
            ],
            settings.kafka_replication_factor,
        )

    async def caught_up() -> bool:
        return reader.caught_up.is_set() and deliveries.caught_up.is_set()

    async def stop() -> None:
        await webhooks.stop()
        await deliveries.stop()
        await reader.stop()
        await producer.stop()
        await http.aclose()
        await storage_channel.close()
        await routing_channel.close()

    service.on_start(create_topics)
    service.on_start(producer.start)
    service.on_start(reader.start)
    service.on_start(deliveries.start)
    service.on_start(webhooks.start)
    service.on_stop(stop)
    service.readiness_check(caught_up)
    service.readiness_check(producer.is_connected)
    await service.run()

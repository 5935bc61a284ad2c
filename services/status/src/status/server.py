from google.longrunning import operations_pb2_grpc

from bus import EVENTS_TOPIC, Record, TopicReader, ensure_topics
from bus.topics import events_spec
from pixelmesh.events.v1 import events_pb2
from pixelmesh.status.v1 import status_service_pb2_grpc
from status.core import GenerationStore
from status.servicer import OperationsServicer, StatusServicer
from status.settings import StatusSettings
from svckit.server import GrpcService


async def serve(settings: StatusSettings) -> None:
    service = GrpcService(settings)
    store = GenerationStore()

    def apply(record: Record[events_pb2.GenerationEvent]) -> None:
        store.apply(record.message.generation)

    reader = TopicReader(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=EVENTS_TOPIC,
        message_type=events_pb2.GenerationEvent,
        handler=apply,
        client_id="status",
    )
    service.add_servicer(
        status_service_pb2_grpc.add_StatusServiceServicer_to_server, StatusServicer(store), "pixelmesh.status.v1.StatusService"
    )
    service.add_servicer(
        operations_pb2_grpc.add_OperationsServicer_to_server, OperationsServicer(store), "google.longrunning.Operations"
    )

    async def create_topics() -> None:
        await ensure_topics(
            settings.kafka_bootstrap_servers, [events_spec(settings.kafka_partitions)], settings.kafka_replication_factor
        )

    async def caught_up() -> bool:
        return reader.caught_up.is_set()

    service.on_start(create_topics)
    service.on_start(reader.start)
    service.on_stop(reader.stop)
    service.readiness_check(caught_up)
    await service.run()

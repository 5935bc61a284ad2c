from bus import CONTROL_TOPIC, Consumer, Producer, Record, TopicReader, ensure_topics, requests_topic, worker_group
from bus.topics import control_spec, dlq_spec, events_spec, provider_health_spec, requests_spec
from pixelmesh.events.v1 import events_pb2
from pixelmesh.routing.v1 import routing_service_pb2_grpc
from pixelmesh.status.v1 import status_service_pb2_grpc
from pixelmesh.storage.v1 import storage_service_pb2_grpc
from svckit.grpc_client import channel, is_serving
from svckit.logging import get_logger
from svckit.server import GrpcService
from worker.core import JobRunner
from worker.health import HealthReporter
from worker.providers import make_provider
from worker.settings import WorkerSettings

log = get_logger(__name__)


async def serve(settings: WorkerSettings) -> None:
    service = GrpcService(settings)
    # One channel to each service, shared by the job runner and the adapter (input images,
    # parent generations), closed on shutdown.
    storage_channel = channel(settings.storage_addr)
    status_channel = channel(settings.status_addr)
    routing_channel = channel(settings.routing_addr)  # failure reports: routing decides what follows
    storage = storage_service_pb2_grpc.StorageServiceStub(storage_channel)
    status = status_service_pb2_grpc.StatusServiceStub(status_channel)
    provider = make_provider(settings.worker_provider, storage, status)
    producer = Producer(settings.kafka_bootstrap_servers, client_id=f"worker-{provider.name}")
    health = HealthReporter(
        producer,
        provider.name,
        interval=settings.worker_health_interval_seconds,
        unhealthy_seconds=settings.worker_unhealthy_seconds,
    )
    runner = JobRunner(
        provider, storage, status, routing_service_pb2_grpc.RoutingServiceStub(routing_channel), producer, health
    )
    consumer = Consumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=requests_topic(provider.name),
        group_id=worker_group(provider.name),
        message_type=events_pb2.GenerationJob,
        handler=runner.handle,
        producer=producer,
        max_in_flight=settings.worker_max_in_flight,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        client_id=f"worker-{provider.name}",
    )

    def on_control(record: Record[events_pb2.ControlMessage]) -> None:
        message = record.message
        if message.HasField("cancel_generation") and runner.cancel(message.cancel_generation.generation_id):
            log.info("cancelled a running job", generation_id=message.cancel_generation.generation_id)

    # Every worker reads every control message (no group): a cancel must reach the one
    # process that holds the job. Replaying the topic's day of history also lets a worker
    # skip queued jobs that were cancelled before it picked them.
    control = TopicReader(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=CONTROL_TOPIC,
        message_type=events_pb2.ControlMessage,
        handler=on_control,
        client_id=f"worker-{provider.name}-control",
    )

    async def create_topics() -> None:
        n = settings.kafka_partitions
        topic = requests_spec(provider.name, n)
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [events_spec(n), topic, dlq_spec(topic.name), control_spec(), provider_health_spec()],
            settings.kafka_replication_factor,
        )

    async def stop() -> None:
        await control.stop()
        await consumer.stop()  # finishes or hands back in-flight jobs
        await health.stop()
        await producer.stop()
        await provider.close()
        await storage_channel.close()
        await status_channel.close()
        await routing_channel.close()

    service.on_start(create_topics)
    service.on_start(producer.start)
    service.on_start(control.start)
    service.on_start(health.start)
    service.on_start(consumer.start)
    service.on_stop(stop)
    service.readiness_check(producer.is_connected)
    service.readiness_check(lambda: is_serving(storage_channel))
    await service.run()

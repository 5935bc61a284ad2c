from bus import KafkaServiceSettings


class WorkerSettings(KafkaServiceSettings):
    service_name: str = "worker"
    grpc_port: int = 50055
    # Which provider pool this process serves (local, openai, bfl, ...).
    worker_provider: str = "local"
    # Jobs handled at once; when full, the worker pauses its partitions.
    worker_max_in_flight: int = 4
    # How often this worker reports its upstream's health to routing (routing.health)...
    worker_health_interval_seconds: float = 30.0
    # ...and how long a refused key or account keeps its pool unhealthy before the next job
    # tries the upstream again.
    worker_unhealthy_seconds: float = 300.0
    storage_addr: str
    status_addr: str
    # Where failed attempts are reported (routing decides the next route or the failure).
    routing_addr: str

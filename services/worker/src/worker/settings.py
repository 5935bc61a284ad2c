from bus import KafkaServiceSettings


class WorkerSettings(KafkaServiceSettings):
    service_name: str = "worker"
    grpc_port: int = 50055
    # Which provider pool this process serves (local, openai, bfl, ...).
    worker_provider: str = "local"
    # Jobs handled at once; when full, the worker pauses its partitions.
    worker_max_in_flight: int = 4
    storage_addr: str
    status_addr: str

from bus import KafkaServiceSettings


class StatusSettings(KafkaServiceSettings):
    service_name: str = "status"
    grpc_port: int = 50054

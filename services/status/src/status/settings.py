from pydantic import Field, SecretStr

from bus import KafkaServiceSettings


class StatusSettings(KafkaServiceSettings):
    service_name: str = "status"
    grpc_port: int = 50054
    # Presigned image URLs in webhook bodies.
    storage_addr: str
    # Cancels are routing's to decide (RoutingService.CancelGeneration).
    routing_addr: str
    # The operator token (the one of pricing's admin RPCs, hence its name): reads of every
    # account's generations (`*`) need it; empty, nobody may make them.
    pricing_admin_token: SecretStr = SecretStr("")
    # Webhook secrets of API keys are derived from it (HMAC-SHA256 with the key id):
    # rotating it changes every key's secret.
    webhook_signing_key: str = Field(min_length=16)
    # Failed webhook deliveries are retried with exponential backoff (first delay, doubling,
    # capped) for this long after the generation ended.
    webhook_retry_seconds: float = Field(default=600.0, ge=0)
    webhook_first_retry_seconds: float = Field(default=1.0, gt=0)
    webhook_max_retry_interval_seconds: float = Field(default=60.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)

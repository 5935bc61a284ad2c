from svckit.settings import ServiceSettings


class EdgeSettings(ServiceSettings):
    service_name: str = "edge"
    # The edge's own gRPC server only carries health and reflection.
    grpc_port: int = 50050
    edge_http_host: str = "127.0.0.1"
    edge_http_port: int = 8080
    # How long a synchronous OpenAI call waits for its generation before answering 504
    # (with the generation id, so the client can poll /api/v2/generate/{id}).
    edge_sync_timeout_seconds: float = 120.0
    # The longest POST /api/v2/generate waits for a result, whatever `Prefer: wait=N` asks.
    edge_v2_max_wait_seconds: int = 60
    # How long an authenticated API key is remembered (edge.auth_cache); 0 asks pricing every time.
    edge_auth_cache_seconds: float = 1.0
    routing_addr: str
    pricing_addr: str
    status_addr: str
    storage_addr: str

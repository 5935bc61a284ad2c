"""Typed settings from environment variables, parsed once at start-up.

A missing or malformed value stops the process with a message naming the variable,
instead of a traceback deep inside the first code that needs it.
"""

from __future__ import annotations

import sys
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclasses add their own (addresses are `<SERVICE>_ADDR`)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    service_name: str = "pixelmesh"
    log_level: str = "INFO"
    # Host the gRPC server binds to; 0.0.0.0 in containers.
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0
    # Prometheus /metrics port; 0 disables the endpoint.
    metrics_port: int = 0
    # Seconds a SIGTERM'd server lets in-flight RPCs finish.
    shutdown_grace_seconds: float = 10.0
    # How often the dependencies are checked while they answer (health SERVING); a failing
    # check is retried every quarter second. Each check is a call to Kafka or a peer.
    readiness_interval_seconds: float = 5.0


S = TypeVar("S", bound=BaseSettings)


def env_name(settings_cls: type[BaseSettings], field: str) -> str:
    prefix = settings_cls.model_config.get("env_prefix", "") or ""
    return f"{prefix}{field}".upper()


def load_settings(settings_cls: type[S]) -> S:
    """Parse settings from the environment or exit(2) naming each bad variable."""
    try:
        return settings_cls()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            name = env_name(settings_cls, field)
            if err["type"] == "missing":
                lines.append(f"  {name}: required but not set")
            else:
                lines.append(f"  {name}: {err['msg']}")
        print(f"{settings_cls.__name__}: invalid configuration\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None

"""Settings of the upstream adapters: one class per provider, keys from the environment.

Each adapter declares its key and base URL under the upstream's customary variable names
(OPENAI_API_KEY, REPLICATE_API_TOKEN, FAL_KEY, ...); the knobs every adapter shares have
WORKER_* names. A missing key stops the worker at start-up naming the variable.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.providers.upstream import RetryPolicy


class UpstreamSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Time spent retrying one upstream call (429 / 5xx / unreachable) before the attempt fails.
    retry_budget_seconds: float = Field(60.0, validation_alias="WORKER_RETRY_BUDGET_SECONDS", gt=0)
    retry_base_seconds: float = Field(0.5, validation_alias="WORKER_RETRY_BASE_SECONDS", gt=0)
    # Largest result file accepted from an upstream.
    download_max_bytes: int = Field(50 * 1024 * 1024, validation_alias="WORKER_DOWNLOAD_MAX_BYTES", gt=0)
    # Polling of submit-then-poll upstreams (BFL, Midjourney proxies, Replicate, fal).
    poll_interval_seconds: float = Field(1.0, validation_alias="WORKER_POLL_INTERVAL_SECONDS", gt=0)
    poll_max_interval_seconds: float = Field(5.0, validation_alias="WORKER_POLL_MAX_INTERVAL_SECONDS", gt=0)
    # An upstream job still unfinished after this is abandoned (timeout, cancelled upstream).
    job_timeout_seconds: float = Field(900.0, validation_alias="WORKER_JOB_TIMEOUT_SECONDS", gt=0)
    # One HTTP request's own timeout.
    request_timeout_seconds: float = Field(120.0, validation_alias="WORKER_REQUEST_TIMEOUT_SECONDS", gt=0)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(budget_seconds=self.retry_budget_seconds, base_seconds=self.retry_base_seconds)

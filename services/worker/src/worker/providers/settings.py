"""Settings of the upstream adapters: one class per provider, keys from the environment.

Each adapter declares its key (`api_key`, a SecretStr) and base URL (`base_url`) under the
upstream's customary variable names (OPENAI_API_KEY, REPLICATE_API_TOKEN, FAL_KEY, ...);
the knobs every adapter shares have WORKER_* names. A missing key stops the worker at
start-up naming the variable. Where the worker's storage and status services are is the
worker's own setting (worker.settings): adapters get those clients in their context.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.providers.upstream import RetryPolicy


class UpstreamSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Time spent retrying one upstream call (429 / 5xx / unreachable) before the attempt fails.
    retry_budget_seconds: float = Field(60.0, validation_alias="WORKER_RETRY_BUDGET_SECONDS", gt=0)
    retry_base_seconds: float = Field(0.5, validation_alias="WORKER_RETRY_BASE_SECONDS", gt=0)
    # Largest result file accepted from an upstream (and largest input image read).
    download_max_bytes: int = Field(50 * 1024 * 1024, validation_alias="WORKER_DOWNLOAD_MAX_BYTES", gt=0)
    # Polling of submit-then-poll upstreams (BFL, Midjourney proxies, Replicate, fal).
    poll_interval_seconds: float = Field(1.0, validation_alias="WORKER_POLL_INTERVAL_SECONDS", gt=0)
    poll_max_interval_seconds: float = Field(5.0, validation_alias="WORKER_POLL_MAX_INTERVAL_SECONDS", gt=0)
    # A job still unfinished after this is abandoned (timeout, cancelled upstream).
    job_timeout_seconds: float = Field(900.0, validation_alias="WORKER_JOB_TIMEOUT_SECONDS", gt=0)
    # One HTTP request's own timeout.
    request_timeout_seconds: float = Field(120.0, validation_alias="WORKER_REQUEST_TIMEOUT_SECONDS", gt=0)
    # Input image URLs are fetched by the worker: by default only public addresses, so a
    # client cannot make it read (and send upstream) what sits inside the cluster.
    input_urls_allow_private: bool = Field(False, validation_alias="WORKER_INPUT_URLS_ALLOW_PRIVATE")

    @classmethod
    def configured(cls, environ: Mapping[str, str]) -> bool:
        """Whether `environ` configures a pool beyond the required variables (which
        worker.providers.configured checks for every adapter): a provider whose credential
        is one of several variables says so here."""
        return True

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(budget_seconds=self.retry_budget_seconds, base_seconds=self.retry_base_seconds)

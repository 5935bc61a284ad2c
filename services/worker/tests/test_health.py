from svckit.errors import ErrorCode
from worker.health import HealthReporter


def test_a_refused_key_reports_unhealthy_until_a_success_or_its_time_is_up(monkeypatch) -> None:  # noqa: ANN001
    now = [1000.0]
    monkeypatch.setattr("worker.health.time.monotonic", lambda: now[0])
    health = HealthReporter(producer=None, provider="openai", interval=30, unhealthy_seconds=300)
    assert health.report().healthy
    health.observe(ErrorCode.PROVIDER_UNAVAILABLE, "openai is rate limiting")  # not the key's fault
    assert health.report().healthy
    health.observe(ErrorCode.PROVIDER_AUTH, "openai refused the gateway's credentials (HTTP 401)")
    sick = health.report()
    assert not sick.healthy and sick.code == "provider_auth_error" and "HTTP 401" in sick.reason
    assert sick.provider == "openai" and sick.worker and sick.interval_seconds == 30
    health.observe(None)  # a job went through: the key works again
    assert health.report().healthy
    health.observe(ErrorCode.PROVIDER_AUTH, "refused")
    now[0] += 301  # then the next job tries the upstream again
    assert health.report().healthy

"""Provider pools' health, as their workers report it on pixelmesh.provider.health.

Every routing replica reads the whole (small, compacted) topic without a consumer group and
keeps each worker instance's latest report. A pool is UNHEALTHY when it has current reports
and none of them is healthy (its key was refused, say): its models are then refused at
submit with a 503 naming the provider and the upstream's reason, instead of queueing jobs
no worker can do. A pool with no current report is UNKNOWN and keeps queueing: its workers
may not have started yet, or scaled to zero (KEDA) until jobs arrive.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bus import Record
from pixelmesh.events.v1 import events_pb2
from pixelmesh.routing.v1 import routing_service_pb2 as pb

# A report is current for this many of its intervals (a worker misses a beat or two under load).
CURRENT_INTERVALS = 3


class ProviderHealthBoard:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # pool -> worker instance -> its latest report (a submit looks up only its routes' pools)
        self._reports: dict[str, dict[str, events_pb2.ProviderHealth]] = {}

    def apply(self, record: Record[events_pb2.ProviderHealth]) -> None:
        report = record.message
        if report.provider and report.worker:
            self._reports.setdefault(report.provider, {})[report.worker] = report

    def current(self, provider: str) -> list[events_pb2.ProviderHealth]:
        now = self._clock()
        return [
            r
            for r in self._reports.get(provider, {}).values()
            if r.report_time.seconds + CURRENT_INTERVALS * max(1, r.interval_seconds) >= now
        ]

    def state(self, provider: str) -> tuple[pb.PoolHealth.ValueType, events_pb2.ProviderHealth | None]:
        """The pool's health, and (when UNHEALTHY) its most recent report."""
        reports = self.current(provider)
        if not reports:
            return pb.POOL_HEALTH_UNKNOWN, None
        if any(r.healthy for r in reports):
            return pb.POOL_HEALTH_HEALTHY, None
        return pb.POOL_HEALTH_UNHEALTHY, max(reports, key=lambda r: r.report_time.ToNanoseconds())

    def refusal(self, provider: str) -> events_pb2.ProviderHealth | None:
        """The report that makes the pool refuse work, or None when it may take jobs."""
        health, report = self.state(provider)
        return report if health == pb.POOL_HEALTH_UNHEALTHY else None

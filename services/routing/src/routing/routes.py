"""Which provider serves a generation: weighted first choice, ordered fallbacks, and a
circuit breaker per provider.

A model's routes are ordered (the catalog's `providers`), each with a weight (default 1).
The first attempt goes to a healthy route drawn in proportion to the weights (weight 0:
fallback only); the rest follow in catalog order. A provider's circuit opens after
`failure_threshold` consecutive retryable failures (upstream down, 5xx, 429 past the
retry budget), sends no traffic for `open_seconds`, then half-opens: one probe attempt
is let through, whose success closes the circuit and whose failure opens it again.

Each routing replica keeps its own breakers, fed by the failures workers report to it
and the successes it reads from the events topic (its share of the partitions): a sick
provider is noticed by every replica, only a little later by each when there are several.
Before circuits, a pool whose workers report its upstream refuses them (routing.health)
takes no route at all.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from routing.health import ProviderHealthBoard
from svckit.errors import ErrorCode, GatewayError

CIRCUIT_STATE = Gauge(
    "pixelmesh_routing_circuit_open", "1 when the provider's circuit is open or half-open", ["provider"]
)
REROUTES = Counter(
    "pixelmesh_routing_fallbacks_total", "Generations sent to their next route", ["from_provider", "to_provider"]
)


@dataclass(frozen=True)
class Route:
    provider: str
    weight: float = 1.0


class Circuit(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self, failure_threshold: int = 5, open_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failure_threshold
        self._open_seconds = open_seconds
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._opened_at: dict[str, float] = {}
        # provider -> when its half-open probe was sent (a probe whose outcome never
        # arrives stops blocking after open_seconds)
        self._probing: dict[str, float] = {}

    def state(self, provider: str) -> Circuit:
        opened = self._opened_at.get(provider)
        if opened is None:
            return Circuit.CLOSED
        if self._clock() - opened < self._open_seconds:
            return Circuit.OPEN
        return Circuit.HALF_OPEN

    def allows(self, provider: str) -> bool:
        """May an attempt go to the provider now? A half-open circuit lets one probe through."""
        state = self.state(provider)
        if state is Circuit.CLOSED:
            return True
        if state is Circuit.HALF_OPEN:
            probe = self._probing.get(provider)
            return probe is None or self._clock() - probe >= self._open_seconds
        return False

    def attempt_started(self, provider: str) -> None:
        if self.state(provider) is Circuit.HALF_OPEN:
            self._probing[provider] = self._clock()

    def retry_after(self, provider: str) -> float:
        opened = self._opened_at.get(provider)
        return 0.0 if opened is None else max(0.0, self._open_seconds - (self._clock() - opened))

    def record_success(self, provider: str) -> None:
        self._failures[provider] = 0
        self._opened_at.pop(provider, None)
        self._probing.pop(provider, None)
        CIRCUIT_STATE.labels(provider).set(0)

    def record_failure(self, provider: str) -> None:
        count = self._failures.get(provider, 0) + 1
        self._failures[provider] = count
        if provider in self._probing or count >= self._threshold:
            self._opened_at[provider] = self._clock()
            self._probing.pop(provider, None)
            CIRCUIT_STATE.labels(provider).set(1)


def routes_for(providers: list[str], weights: dict[str, float] | None = None) -> list[Route]:
    """Routes of a model: without weights, the first provider takes every first attempt
    and the others are fallbacks in order."""
    if not weights:
        return [Route(p, 1.0 if i == 0 else 0.0) for i, p in enumerate(providers)]
    return [Route(p, weights.get(p, 0.0)) for p in providers]


class RoutePlanner:
    def __init__(
        self, breaker: CircuitBreaker, rng: random.Random | None = None, *, health: ProviderHealthBoard | None = None
    ) -> None:
        self.breaker = breaker
        self.health = health or ProviderHealthBoard()
        self._rng = rng or random.Random()

    def plan(self, routes: list[Route]) -> list[str]:
        """Providers in the order to try them: a weighted healthy first choice, then the
        others in catalog order. PROVIDER_UNAVAILABLE naming the provider when every pool
        reports its upstream refuses it, or when every circuit is open."""
        refused = {r.provider: report for r in routes if (report := self.health.refusal(r.provider)) is not None}
        refusals = list(refused.values())
        if len(refused) == len(routes):
            names = ", ".join(r.provider for r in refusals)
            reasons = "; ".join(r.reason or r.code for r in refusals)
            raise GatewayError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"This model's provider ({names}) cannot serve it now: {reasons}. "
                "It comes back once the operator fixes it.",
                provider=names,
            )
        routes = [r for r in routes if r.provider not in refused]
        healthy = [r for r in routes if self.breaker.allows(r.provider)]
        if not healthy:
            wait = min(self.breaker.retry_after(r.provider) for r in routes)
            raise GatewayError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                "Every provider of this model is failing right now; try again shortly.",
                retry_after_seconds=str(max(1, round(wait))),
            )
        weighted = [r for r in healthy if r.weight > 0] or healthy[:1]
        first = self._rng.choices(weighted, weights=[r.weight or 1 for r in weighted])[0]
        self.breaker.attempt_started(first.provider)
        return [first.provider] + [r.provider for r in routes if r.provider != first.provider]

    def next_route(self, routes: list[str], tried: set[str]) -> str | None:
        """The first untried route whose pool takes work and whose circuit lets an attempt through."""
        for provider in routes:
            if provider not in tried and self.health.refusal(provider) is None and self.breaker.allows(provider):
                self.breaker.attempt_started(provider)
                return provider
        return None

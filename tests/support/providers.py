"""Provider pools for the end-to-end tests: an upstream emulator and a worker process per
provider, started once per session on first use.

The test mesh's routing enables every provider (ROUTING_PROVIDERS), so jobs for a provider
wait in its topic until a test starts its pool with `provider_pool.start(name)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.emulators.harness import EmulatorServer
from tests.support.ports import free_port

EMULATOR_KEY = "emulator-key"


@dataclass(frozen=True)
class ProviderSetup:
    emulator: str  # module tests/emulators/<emulator>.py
    key_env: str
    base_url_env: str
    base_path: str = ""  # appended to the emulator's URL to make the adapter's base URL
    extra_env: dict[str, str] = field(default_factory=dict)


# provider (WORKER_PROVIDER) -> how its worker reaches its emulator
PROVIDER_SETUPS: dict[str, ProviderSetup] = {}


class ProviderPool:
    def __init__(self, mesh) -> None:
        self._mesh = mesh
        self.emulators: dict[str, EmulatorServer] = {}
        self.workers: dict[str, str] = {}  # provider -> worker instance name

    def emulator(self, provider: str) -> EmulatorServer:
        setup = PROVIDER_SETUPS[provider]
        if setup.emulator not in self.emulators:
            self.emulators[setup.emulator] = EmulatorServer(setup.emulator, free_port(), api_key=EMULATOR_KEY).start()
        return self.emulators[setup.emulator]

    def start(self, provider: str, **env: str) -> EmulatorServer:
        """The provider's emulator, with a worker of the provider serving its topic."""
        setup = PROVIDER_SETUPS[provider]
        server = self.emulator(provider)
        if provider not in self.workers:
            instance = f"worker-{provider}"
            port = str(free_port())
            self._mesh.start(
                "worker",
                instance=instance,
                GRPC_PORT=port,
                METRICS_PORT=str(free_port()),
                WORKER_PROVIDER=provider,
                **{setup.key_env: EMULATOR_KEY, setup.base_url_env: server.url + setup.base_path},
                WORKER_RETRY_BUDGET_SECONDS="3",
                WORKER_RETRY_BASE_SECONDS="0.1",
                WORKER_POLL_INTERVAL_SECONDS="0.2",
                WORKER_POLL_MAX_INTERVAL_SECONDS="0.5",
                **setup.extra_env,
                **env,
            )
            self._mesh.wait_serving(port, instance)
            self.workers[provider] = instance
        return server

    def stop(self) -> None:
        for instance in self.workers.values():
            self._mesh.stop(instance)
        for server in self.emulators.values():
            server.stop()

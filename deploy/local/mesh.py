"""Starts and stops the local mesh: Kafka, MinIO and every service, as plain processes.

`make up` runs `mesh.py up`: infrastructure through kafka.sh/minio.sh, then each service
(`python -m <service>`) with its environment, each with a pid file and a log under
the run folder; it returns once every gRPC health check says SERVING. `make down`
stops exactly the pids it recorded. The integration tests use `LocalMesh` the same way
on free ports in a temporary folder.

Provider pools: `local` always, and one worker per provider whose key is in the
environment or in an ignored `.env` at the repository's root (`OPENAI_API_KEY=sk-...`;
the variables each adapter's settings require, worker.providers.configured); routing
routes to exactly those pools (ROUTING_PROVIDERS, unless set by hand). `make status`
lists them with their models and health, as routing sees them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pixelmesh.routing.v1 import routing_service_pb2, routing_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
# Start order: each service's dependencies come before it.
SERVICES = ("pricing", "storage", "status", "routing", "worker", "edge")


def read_dotenv(path: Path = ROOT / ".env") -> dict[str, str]:
    """KEY=VALUE lines of an (ignored) .env file; a variable already in the environment wins."""
    values = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip().removeprefix("export ")
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip().strip("'\"")
    return {k: v for k, v in values.items() if k not in os.environ}


def read_env_table(path: Path = HERE / "mesh.env") -> dict[str, str]:
    table = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            table[key.strip()] = os.environ.get(key.strip(), value.strip())
    return table


@dataclass
class LocalMesh:
    run_dir: Path
    ports: dict[str, str]
    api_key: str
    extra_env: dict[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    # Operator token of pricing's admin RPCs (the `pixelmesh` CLI sends it).
    admin_token: str = field(default_factory=lambda: "pm-admin-" + secrets.token_urlsafe(24))
    # Webhook secrets of API keys derive from it (status service).
    webhook_signing_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # Provider pools with a worker started by up() besides `local` (the `worker` instance).
    pools: tuple[str, ...] = ()

    # ---- infrastructure -------------------------------------------------------------
    @property
    def infra_env(self) -> dict[str, str]:
        p = self.ports
        return {
            **os.environ,
            "KAFKA_PORT": p["KAFKA_PORT"],
            "KAFKA_CONTROLLER_PORT": p["KAFKA_CONTROLLER_PORT"],
            "KAFKA_DATA_DIR": str(self.run_dir / "kafka"),
            "MINIO_PORT": p["MINIO_PORT"],
            "MINIO_CONSOLE_PORT": p["MINIO_CONSOLE_PORT"],
            "MINIO_DATA_DIR": str(self.run_dir / "minio"),
            "MINIO_ROOT_USER": p["MINIO_ROOT_USER"],
            "MINIO_ROOT_PASSWORD": p["MINIO_ROOT_PASSWORD"],
        }

    def infra(self, action: str) -> None:
        for script in ("kafka.sh", "minio.sh"):
            subprocess.run(["bash", str(HERE / script), action], env=self.infra_env, check=True)

    # ---- services -------------------------------------------------------------------
    def addr(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[f'{service.upper()}_GRPC_PORT']}"

    def service_env(self, service: str, **overrides: str) -> dict[str, str]:
        p = self.ports
        env = {
            **os.environ,
            "SERVICE_NAME": service,
            "LOG_LEVEL": self.log_level,
            "GRPC_PORT": p[f"{service.upper()}_GRPC_PORT"],
            "METRICS_PORT": p.get(f"{service.upper()}_METRICS_PORT", "0"),
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{p['KAFKA_PORT']}",
            "PRICING_ADDR": self.addr("pricing"),
            "ROUTING_ADDR": self.addr("routing"),
            "STATUS_ADDR": self.addr("status"),
            "STORAGE_ADDR": self.addr("storage"),
            "ROUTING_PROVIDERS": p["ROUTING_PROVIDERS"],
            "PRICING_DEV_API_KEY": self.api_key,
            "PRICING_ADMIN_TOKEN": self.admin_token,
            "PRICING_DATABASE_URL": f"sqlite+aiosqlite:///{self.run_dir / 'pricing.db'}",
            "ROUTING_DATABASE_URL": f"sqlite+aiosqlite:///{self.run_dir / 'routing.db'}",
            "WEBHOOK_SIGNING_KEY": self.webhook_signing_key,
            "STORAGE_ENDPOINT": f"127.0.0.1:{p['MINIO_PORT']}",
            "STORAGE_PUBLIC_ENDPOINT": f"http://127.0.0.1:{p['MINIO_PORT']}",
            "STORAGE_ACCESS_KEY": p["MINIO_ROOT_USER"],
            "STORAGE_SECRET_KEY": p["MINIO_ROOT_PASSWORD"],
            "EDGE_HTTP_PORT": p["EDGE_HTTP_PORT"],
            "WORKER_PROVIDER": "local",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
            **overrides,
        }
        return env

    def pid_file(self, instance: str) -> Path:
        return self.run_dir / "pids" / f"{instance}.pid"

    def log_file(self, instance: str) -> Path:
        return self.run_dir / "logs" / f"{instance}.log"

    def pid(self, instance: str) -> int | None:
        try:
            pid = int(self.pid_file(instance).read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def start(self, service: str, instance: str | None = None, **overrides: str) -> int:
        """Start `python -m <service>` in its own session (unless already running)."""
        instance = instance or service
        if (pid := self.pid(instance)) is not None:
            return pid
        for folder in ("pids", "logs"):
            (self.run_dir / folder).mkdir(parents=True, exist_ok=True)
        env = self.service_env(service, **overrides)
        with open(self.log_file(instance), "ab") as log:
            proc = subprocess.Popen(
                [PYTHON, "-m", service], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
            )
        self.pid_file(instance).write_text(str(proc.pid))
        return proc.pid

    def stop(self, instance: str, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        pid = self.pid(instance)
        if pid is None:
            self.pid_file(instance).unlink(missing_ok=True)
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid(instance) is not None:
            time.sleep(0.05)
            with contextlib.suppress(ChildProcessError):  # not our child: nothing to reap
                os.waitpid(pid, os.WNOHANG)
        if self.pid(instance) is not None:
            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.pid_file(instance).unlink(missing_ok=True)

    def wait_serving(self, port: str | int, instance: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                if self.pid(instance) is None:
                    raise RuntimeError(f"{instance} exited; see {self.log_file(instance)}:\n{self._tail(instance)}")
                try:
                    if (
                        stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(
            f"{instance} not SERVING after {timeout:.0f} s; see {self.log_file(instance)}:\n{self._tail(instance)}"
        )

    def _tail(self, instance: str, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file(instance).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def pool_ports(self, i: int) -> dict[str, str]:
        """GRPC_PORT and METRICS_PORT of the i-th extra pool's worker (after the local one's)."""
        return {
            "GRPC_PORT": str(int(self.ports["WORKER_GRPC_PORT"]) + 1 + i),
            "METRICS_PORT": str(int(self.ports["WORKER_METRICS_PORT"]) + 1 + i),
        }

    def up(self) -> None:
        self.infra("start")
        for service in SERVICES:
            self.start(service)
        for i, provider in enumerate(self.pools):
            self.start("worker", instance=f"worker-{provider}", WORKER_PROVIDER=provider, **self.pool_ports(i))
        for service in SERVICES:
            self.wait_serving(self.ports[f"{service.upper()}_GRPC_PORT"], service)
        for i, provider in enumerate(self.pools):
            self.wait_serving(self.pool_ports(i)["GRPC_PORT"], f"worker-{provider}")

    def providers(self) -> list[routing_service_pb2.ProviderPool]:
        """The pools as routing sees them (models, health, circuit)."""
        with grpc.insecure_channel(self.addr("routing")) as ch:
            stub = routing_service_pb2_grpc.RoutingServiceStub(ch)
            return list(stub.ListProviders(routing_service_pb2.ListProvidersRequest(), timeout=5).providers)

    def down(self, infra: bool = True) -> None:
        for service in reversed(SERVICES):
            self.stop(service)
        pids = self.run_dir / "pids"
        for stray in pids.glob("*.pid") if pids.exists() else []:
            self.stop(stray.stem)  # extra instances (tests start more workers)
        if infra:
            self.infra("stop")


def configured_pools(environ: dict[str, str]) -> tuple[str, ...]:
    """The providers besides `local` whose adapter finds every variable it requires."""
    from worker.providers import configured  # the worker's registry: one owner of what each adapter needs

    return tuple(p for p in configured(environ) if p != "local")


def default_mesh() -> LocalMesh:
    run_dir = ROOT / ".run"
    run_dir.mkdir(exist_ok=True)
    key_file = run_dir / "dev_api_key"
    if not key_file.exists():
        key_file.write_text("pm-dev-" + secrets.token_urlsafe(24))
        key_file.chmod(0o600)
    admin_file = run_dir / "admin_token"
    if not admin_file.exists():
        admin_file.write_text("pm-admin-" + secrets.token_urlsafe(24))
        admin_file.chmod(0o600)
    signing_file = run_dir / "webhook_signing_key"
    if not signing_file.exists():
        signing_file.write_text(secrets.token_urlsafe(32))
        signing_file.chmod(0o600)
    dotenv = read_dotenv()
    pools = configured_pools({**dotenv, **os.environ})
    ports = read_env_table()
    if "ROUTING_PROVIDERS" not in os.environ and "ROUTING_PROVIDERS" not in dotenv:
        ports["ROUTING_PROVIDERS"] = ",".join(("local", *pools))
    else:
        ports["ROUTING_PROVIDERS"] = dotenv.get("ROUTING_PROVIDERS", ports["ROUTING_PROVIDERS"])
        routed = {p.strip() for p in ports["ROUTING_PROVIDERS"].split(",")}
        pools = tuple(p for p in pools if p in routed)
        for missing in sorted(routed - {"local", *pools}):
            print(f"warning: ROUTING_PROVIDERS routes to {missing}, but its key is not set: its jobs would wait")
    return LocalMesh(
        run_dir,
        ports,
        key_file.read_text().strip(),
        extra_env=dotenv,
        webhook_signing_key=signing_file.read_text().strip(),
        admin_token=admin_file.read_text().strip(),
        pools=pools,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="local pixelmesh mesh")
    parser.add_argument("action", choices=["up", "down", "status"])
    action = parser.parse_args().action
    mesh = default_mesh()
    if action == "up":
        started = time.monotonic()
        try:
            mesh.up()
        except RuntimeError as exc:
            print(f"make up failed: {exc}", file=sys.stderr)
            return 1
        url = f"http://127.0.0.1:{mesh.ports['EDGE_HTTP_PORT']}"
        print(f"pixelmesh is up in {time.monotonic() - started:.1f} s")
        print(f"  pools:   {', '.join(('local', *mesh.pools))}   (make status: their models and health)")
        print(f"  edge:    {url}   (OpenAI base_url: {url}/v1)")
        print(f"  api key: {mesh.api_key}   (also in .run/dev_api_key)")
        print(
            f"  admin:   PRICING_ADDR={mesh.addr('pricing')} PRICING_ADMIN_TOKEN=$(cat .run/admin_token) .venv/bin/pixelmesh keys list"
        )
        print(f"  logs:    {mesh.run_dir / 'logs'}")
    elif action == "down":
        mesh.down()
        print("pixelmesh is down")
    else:
        instances = [*SERVICES, *(f"worker-{p}" for p in mesh.pools)]
        for instance in instances:
            pid = mesh.pid(instance)
            print(f"{instance:18} {'running pid ' + str(pid) if pid else 'stopped'}")
        if mesh.pid("routing") is None:
            return 0
        try:
            pools = mesh.providers()
        except grpc.RpcError as exc:
            print(f"routing did not answer: {exc.code().name}")
            return 1
        print()
        print(f"{'pool':12} {'health':10} {'workers':8} {'circuit':10} models")
        for pool in pools:
            health = routing_service_pb2.PoolHealth.Name(pool.health).removeprefix("POOL_HEALTH_").lower()
            print(f"{pool.name:12} {health:10} {pool.workers:<8} {pool.circuit:10} {', '.join(pool.models)}")
            if pool.reason:
                print(f"{'':12} {pool.code}: {pool.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench-workers`: what provider workers cost (issue 4). A benchmark, not a test.

1. One midjourney worker process (WORKER_MAX_IN_FLIGHT=1000) with real Kafka, MinIO,
   storage and status, against the Midjourney proxy emulator (its own process) with
   30 s jobs: 1,000 jobs produced to the provider topic as routing does (QUEUED state on
   the events topic, then the job). Reported: the worker's RSS (idle, peak), its CPU
   seconds while it holds the jobs, the peak of jobs in flight (its own metric), and the
   time until every job ended (events topic).
2. Throughput of 1 vs 2 bfl worker processes (same settings each) against the BFL
   emulator with fixed 0.5 s jobs: jobs/s over the same number of jobs, side by side.

Run: .venv/bin/python -m tests.bench.workers [--jobs 1000 --job-seconds 30 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from bus import EVENTS_TOPIC, Producer, generation_event, requests_topic, worker_group
from lifecycle import TERMINAL_STATES
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from routing.catalog import Catalog
from tests.bench.procs import cpu_seconds, load_mesh_module, rss_mb, stop_process, wait_http
from tests.bench.procs import pid_from_file as _pid_file
from tests.support.ports import free_port
from tests.support.provider_jobs import generation

ROOT = Path(__file__).resolve().parents[2]
KEY = "bench-" + secrets.token_hex(8)


# ---- processes --------------------------------------------------------------------------

class Emulator:
    """An upstream emulator as a process of its own (`python -m tests.emulators`)."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.emulators", name, "--port", str(self.port), "--api-key", KEY],
            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_http(f"{self.url}/_emulator/calls", self.proc, f"emulator {name}")

    def faults(self, **faults) -> None:
        httpx.post(f"{self.url}/_emulator/faults", json=faults).raise_for_status()

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class Workers:
    mesh: object
    provider: str
    env: dict[str, str]
    instances: list[str] = field(default_factory=list)
    metrics_ports: list[int] = field(default_factory=list)

    def start(self, count: int) -> None:
        for i in range(count):
            instance, port, metrics = f"bench-worker-{self.provider}-{i}", free_port(), free_port()
            self.mesh.start("worker", instance=instance, WORKER_PROVIDER=self.provider, GRPC_PORT=str(port),
                            METRICS_PORT=str(metrics), **self.env)
            self.mesh.wait_serving(port, instance)
            self.instances.append(instance)
            self.metrics_ports.append(metrics)

    def pids(self) -> list[int]:
        return [self.mesh.pid(i) for i in self.instances]

    def in_flight(self) -> float:
        total = 0.0
        for port in self.metrics_ports:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                continue
            for line in text.splitlines():
                if line.startswith("pixelmesh_worker_jobs_in_flight{"):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        for instance in self.instances:
            self.mesh.stop(instance, timeout=60)
        self.instances.clear()
        self.metrics_ports.clear()


# ---- Kafka --------------------------------------------------------------------------------

class Ends:
    """Counts generations reaching a terminal state, from the events topic's current end on."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(EVENTS_TOPIC, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="latest")
        self.ended: dict[str, int] = {}
        self.times: dict[str, float] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self._consumer.start()  # no group: every partition, from its end
        while not self._consumer.assignment():
            await asyncio.sleep(0.05)
        for tp in self._consumer.assignment():
            await self._consumer.position(tp)  # the end is fixed now, before any job is fed
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    g = events_pb2.GenerationEvent.FromString(r.value).generation
                    if g.state in TERMINAL_STATES or (g.state == gen.GENERATION_STATE_QUEUED and g.attempts and g.attempts[-1].error.code):
                        if g.id not in self.ended:
                            self.ended[g.id] = g.state
                            self.times[g.id] = time.monotonic()

    async def wait(self, ids: set[str], timeout: float) -> float:
        started = time.monotonic()
        while not ids <= self.ended.keys():
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{len(ids - self.ended.keys())} jobs did not end within {timeout:.0f} s")
            await asyncio.sleep(0.1)
        return time.monotonic()

    def quantiles(self, ids: set[str], since: float) -> str:
        """When the first, half, 99 % and all of the jobs had ended (seconds after `since`)."""
        times = sorted(self.times[i] - since for i in ids if i in self.times)
        pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
        return f"first {times[0]:.1f} s, half {pick(0.5):.1f} s, 99 % {pick(0.99):.1f} s, last {times[-1]:.1f} s"

    def failed(self, ids: set[str]) -> int:
        return sum(1 for i in ids if self.ended.get(i) != gen.GENERATION_STATE_SUCCEEDED)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self._consumer.stop()


async def feed(bootstrap: str, jobs: list[gen.Generation]) -> None:
    """What routing does per generation: its QUEUED state, then the job on the provider's topic."""
    producer = Producer(bootstrap, client_id="bench-feed")
    await producer.start()
    try:
        for start in range(0, len(jobs), 200):
            chunk = jobs[start : start + 200]
            await asyncio.gather(*(producer.send(EVENTS_TOPIC, g.id, generation_event(g, "routing")) for g in chunk))
            await asyncio.gather(*(producer.send(requests_topic(g.provider), g.id, events_pb2.GenerationJob(generation=g, routes=[g.provider])) for g in chunk))
    finally:
        await producer.stop()


async def group_members(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
        for response in described:
            for g in response.groups:
                state, members = g[2], g[5]
                return len(members) if state == "Stable" else 0
        return 0
    finally:
        await admin.close()


def jobs_for(provider: str, model: str, count: int, label: str, **kw) -> list[gen.Generation]:
    """Generations as routing admits them (the catalog's ETA included), for one provider."""
    eta = Catalog.load({provider}).get(model).eta_seconds
    out = []
    for i in range(count):
        g = generation(model, f"{label} {i}", **kw)
        g.provider, g.eta_seconds = provider, eta
        out.append(g)
    return out


# ---- the two measurements -------------------------------------------------------------------

async def hold(mesh, bootstrap: str, args) -> dict:
    emulator = Emulator("midjourney", {"MJ_EMULATOR_FLAVOR": "novicezk"})
    emulator.faults(job_seconds=args.job_seconds)
    workers = Workers(mesh, "midjourney", {
        "WORKER_MAX_IN_FLIGHT": str(args.jobs), "MIDJOURNEY_BASE_URL": emulator.url, "MIDJOURNEY_API_KEY": KEY,
        "MIDJOURNEY_FLAVOR": "novicezk",
    })
    ends = Ends(bootstrap)
    try:
        workers.start(1)
        [pid] = workers.pids()
        await asyncio.sleep(2)
        idle_rss = rss_mb(pid)
        await ends.start()
        jobs = jobs_for("midjourney", "midjourney-v6", args.jobs, "bench hold", size="1:1")
        ids = {g.id for g in jobs}
        others = {"emulator": emulator.proc.pid, "status": mesh.pid("status"), "storage": mesh.pid("storage"),
                  "kafka": _pid_file(mesh.run_dir / "kafka"), "minio": _pid_file(mesh.run_dir / "minio")}
        others = {k: v for k, v in others.items() if v}
        others_cpu0 = {k: cpu_seconds(v) for k, v in others.items()}
        cpu0, started = cpu_seconds(pid), time.monotonic()
        peak_rss, peak_in_flight = idle_rss, 0.0
        waiter = asyncio.create_task(ends.wait(ids, args.job_seconds * 10 + 120))
        await feed(bootstrap, jobs)
        fed = time.monotonic()
        while not waiter.done():
            peak_rss = max(peak_rss, rss_mb(pid))
            peak_in_flight = max(peak_in_flight, await asyncio.to_thread(workers.in_flight))
            await asyncio.sleep(0.5)
        ended = await waiter
        return {
            "jobs": args.jobs, "job_seconds": args.job_seconds, "idle_rss_mb": idle_rss, "peak_rss_mb": peak_rss,
            "cpu_seconds": cpu_seconds(pid) - cpu0, "feed_seconds": fed - started, "drain_seconds": ended - started,
            "others_cpu": ", ".join(f"{k} {cpu_seconds(v) - others_cpu0[k]:.0f} s" for k, v in others.items()),
            "peak_in_flight": peak_in_flight, "failed": ends.failed(ids), "ended": ends.quantiles(ids, started),
        }
    finally:
        try:
            await ends.stop()
        finally:
            try:
                workers.stop()
            finally:
                emulator.stop()


async def throughput(mesh, bootstrap: str, args, processes: int, emulator: Emulator) -> dict:
    workers = Workers(mesh, "bfl", {
        "WORKER_MAX_IN_FLIGHT": str(args.in_flight), "BFL_BASE_URL": emulator.url, "BFL_API_KEY": KEY,
        "WORKER_POLL_INTERVAL_SECONDS": "0.1", "WORKER_POLL_MAX_INTERVAL_SECONDS": "0.5",
    })
    ends = Ends(bootstrap)
    try:
        workers.start(processes)
        deadline = time.monotonic() + 60
        while await group_members(bootstrap, worker_group("bfl")) != processes:  # every worker holds partitions
            if time.monotonic() > deadline:
                raise RuntimeError("the bfl consumer group did not settle")
            await asyncio.sleep(0.5)
        await ends.start()
        warm = jobs_for("bfl", "flux-dev", args.in_flight * processes, f"warm-up {processes}")
        await feed(bootstrap, warm)
        await ends.wait({g.id for g in warm}, 120)
        jobs = jobs_for("bfl", "flux-dev", args.throughput_jobs, f"throughput {processes}")
        ids = {g.id for g in jobs}
        cpu0 = sum(cpu_seconds(p) for p in workers.pids())
        started = time.monotonic()
        await feed(bootstrap, jobs)
        ended = await ends.wait(ids, 600)
        seconds = ended - started
        return {"processes": processes, "jobs": len(jobs), "seconds": seconds, "jobs_per_s": len(jobs) / seconds,
                "worker_cpu_seconds": sum(cpu_seconds(p) for p in workers.pids()) - cpu0, "failed": ends.failed(ids)}
    finally:
        try:
            await ends.stop()
        finally:
            workers.stop()


async def main(args) -> None:
    mesh_module = load_mesh_module()
    ports = mesh_module.read_env_table()
    for key in list(ports):
        if key.endswith("_PORT"):
            ports[key] = str(free_port())
    run_dir = Path(tempfile.mkdtemp(prefix="pixelmesh-bench-"))
    mesh = mesh_module.LocalMesh(run_dir=run_dir, ports=ports, api_key="pm-bench-" + secrets.token_urlsafe(12),
                                 extra_env={"SHUTDOWN_GRACE_SECONDS": "10"})
    bootstrap = f"127.0.0.1:{ports['KAFKA_PORT']}"
    print(f"bench-workers: mesh in {run_dir} (Kafka, MinIO, storage, status)", flush=True)
    try:
        mesh.infra("start")
        for service in ("storage", "status"):
            mesh.start(service)
        for service in ("storage", "status"):
            mesh.wait_serving(ports[f"{service.upper()}_GRPC_PORT"], service)

        if not args.skip_hold:
            print(f"\n[1] one midjourney worker holding {args.jobs} jobs of {args.job_seconds:.0f} s ...", flush=True)
            h = await hold(mesh, bootstrap, args)
            print(f"    jobs                 {h['jobs']} x {h['job_seconds']:.0f} s emulated Midjourney runs (novicezk proxy)")
            print(f"    peak jobs in flight  {h['peak_in_flight']:.0f}")
            print(f"    worker RSS           {h['idle_rss_mb']:.0f} MB idle -> {h['peak_rss_mb']:.0f} MB peak "
                  f"(+{(h['peak_rss_mb'] - h['idle_rss_mb']) * 1024 / h['jobs']:.0f} KB per job)")
            print(f"    worker CPU           {h['cpu_seconds']:.1f} s over {h['drain_seconds']:.1f} s "
                  f"({100 * h['cpu_seconds'] / h['drain_seconds']:.0f} % of one core)")
            print(f"    fed in               {h['feed_seconds']:.1f} s; all ended after {h['drain_seconds']:.1f} s; failed {h['failed']}")
            print(f"    jobs ended           {h['ended']}")
            print(f"    CPU of the others    {h['others_cpu']}")

        if not args.skip_throughput:
            print(f"\n[2] bfl workers, {args.in_flight} jobs in flight each, {args.latency} s fixed-latency emulator, "
                  f"{args.throughput_jobs} jobs ...", flush=True)
            emulator = Emulator("bfl", {"BFL_EMULATOR_MAX_ACTIVE": "0"})
            emulator.faults(job_seconds=args.latency)
            try:
                runs = [await throughput(mesh, bootstrap, args, n, emulator) for n in (1, 2)]
            finally:
                emulator.stop()
            print(f"    {'processes':>9} {'jobs':>6} {'seconds':>8} {'jobs/s':>7} {'speed-up':>8} {'worker CPU s':>12} {'failed':>6}")
            for r in runs:
                print(f"    {r['processes']:>9} {r['jobs']:>6} {r['seconds']:>8.1f} {r['jobs_per_s']:>7.1f} "
                      f"{r['jobs_per_s'] / runs[0]['jobs_per_s']:>7.2f}x {r['worker_cpu_seconds']:>12.1f} {r['failed']:>6}")
            print(f"    machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        mesh.down()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="provider worker benchmark (issue 4)")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs one midjourney worker holds")
    parser.add_argument("--job-seconds", type=float, default=30.0, help="emulated Midjourney job length")
    parser.add_argument("--throughput-jobs", type=int, default=300)
    parser.add_argument("--in-flight", type=int, default=16, help="WORKER_MAX_IN_FLIGHT of each bfl worker")
    parser.add_argument("--latency", type=float, default=0.5, help="fixed BFL job length")
    parser.add_argument("--skip-hold", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))

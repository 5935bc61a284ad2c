"""`make bench`: pixelmesh vs the LiteLLM proxy vs the bare upstream, in one run (issue 10).

A benchmark, not a test: it prints its figures and the targets beside them, asserts
nothing, and exits 0 unless the harness itself broke. Every process it starts is stopped
at the end, whatever failed.

What it starts (all on 127.0.0.1, free ports, one temp folder):
- the fake OpenAI Images upstream (tests/bench/fake_openai.py, its own process), which
  answers at once with a URL to a 7 KB 1024x1024 PNG (or the PNG as b64_json);
- the whole mesh as `make up` runs it (deploy/local/mesh.py: Kafka, MinIO and every
  service), whose worker is an `openai` worker pointed at the fake upstream
  (ROUTING_PROVIDERS=openai, WORKER_PROVIDER=openai, OPENAI_BASE_URL);
- the LiteLLM proxy (deploy/local/litellm.sh, its own venv under .cache/, one worker)
  with `dall-e-3` -> `openai/dall-e-3` on the same fake upstream.

What it measures:
1. Sync: `wrk --latency` with the same `POST /v1/images/generations` body
   (dall-e-3, 1024x1024) at c=1, c=16 and c=64 against the upstream, LiteLLM and
   pixelmesh, interleaved point by point, twice (the second round in the reverse target
   order) so drift and noise show; p50/p99, req/s, non-2xx, timeouts and socket errors,
   every 200 checked for an image; the ratios pixelmesh/LiteLLM. Before round 1, 30 s
   of c=16 on LiteLLM and on pixelmesh, not counted: steady state, not Kafka's JIT.
2. Mesh CPU ms per generation: utime+stime from /proc of every process of the mesh
   (each service, the Kafka JVM, MinIO) over each pixelmesh run, divided by the
   generations that succeeded in it (the events topic), per process too; RSS per service
   after each round; idle CPU per service over ~20 s once the load is over.
3. Async: a fixed number of `POST /api/v2/generate` (10,000 at c=64) through wrk
   (tests/bench/wrk_submits.lua): accepted/s, submit p50/p99, then how long until every
   accepted generation ended (the events topic) and how many failed.
4. Checks: a sample request through each target before and after, the image of a
   pixelmesh URL fetched from MinIO (a PNG), and the ledger settled (the captures in
   /api/v2/usage equal the generations that succeeded).

Run: .venv/bin/python -m tests.bench.gateway [--duration 10 --warmup 3 --submits 10000 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

from pixelmesh.common.v1 import generation_pb2 as gen
from tests.bench.procs import ROOT, load_mesh_module, pid_from_file, stop_process, tree_cpu_seconds, tree_rss_mb, wait_http
from tests.bench.workers import Ends
from tests.support.ports import free_port

BENCH = Path(__file__).resolve().parent
SYNC_BODY = '{"model":"dall-e-3","prompt":"a lighthouse at dusk, oil on canvas","size":"1024x1024"}'
ASYNC_BODY = '{"model":"dall-e-3","prompt":"a forest at night, ink and watercolour","size":"1024x1024"}'
LITELLM_KEY = "sk-pixelmesh-bench"
UPSTREAM_KEY = "sk-fake-upstream-" + secrets.token_hex(6)
TARGETS = ("upstream", "litellm", "pixelmesh")
LABEL = {"upstream": "upstream", "litellm": "LiteLLM", "pixelmesh": "pixelmesh"}
POINTS = (1, 16, 64)


def say(*parts: object) -> None:
    print(*parts, flush=True)


# ---- wrk ----------------------------------------------------------------------------------

@dataclass
class WrkRun:
    target: str
    connections: int
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    non2xx: int = 0
    timeouts: int = 0
    socket_errors: int = 0
    ok: int = 0
    bad: int = 0
    window: int = 0  # ok answers after the ramp
    raw: str = ""

    @property
    def errors(self) -> int:
        """Everything that was not a 200 with an image: non-2xx, timeouts, socket errors, 200s without one."""
        return self.non2xx + self.timeouts + self.socket_errors + self.bad


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value.strip())
    if not m:
        raise ValueError(f"unreadable wrk time {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(text: str, target: str, connections: int, ramp: float = 0.0) -> WrkRun:
    """wrk's summary; with a ramp, req/s counts the image answers after it (BENCH line)."""
    run = WrkRun(target, connections, raw=text)
    if m := re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", text, re.M):
        run.requests, run.seconds = int(m.group(1)), _ms(m.group(2)) / 1000
    if m := re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M):
        run.rps = float(m.group(1))
    if run.requests:
        if m := re.search(r"^\s+50%\s+(\S+)", text, re.M):
            run.p50_ms = _ms(m.group(1))
        if m := re.search(r"^\s+99%\s+(\S+)", text, re.M):
            run.p99_ms = _ms(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        run.socket_errors = int(m.group(1)) + int(m.group(2)) + int(m.group(3))
        run.timeouts = int(m.group(4))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        run.non2xx = int(m.group(1))
    if m := re.search(r"^BENCH ok=(\d+) bad=(\d+) window=(\d+)", text, re.M):
        run.ok, run.bad, run.window = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if ramp and run.seconds > ramp:
            run.rps = run.window / (run.seconds - ramp)
    return run


def wrk_threads(connections: int) -> int:
    return 1 if connections < 2 else min(2, os.cpu_count() or 1)


async def wrk(url: str, key: str, connections: int, seconds: float, timeout: float, target: str, ramp: float = 0.0) -> WrkRun:
    """One wrk run of ramp + seconds (as a subprocess, so the event loop, and the events
    consumer, go on); req/s counts the answers after the ramp, latencies are the whole run's."""
    cmd = ["wrk", f"-t{wrk_threads(connections)}", f"-c{connections}", f"-d{max(1, round(ramp + seconds))}s", "--latency",
           f"--timeout={timeout:g}s", "-s", str(BENCH / "wrk_post.lua"), url]
    proc = await asyncio.create_subprocess_exec(
        *cmd, env={**os.environ, "BENCH_KEY": key, "BENCH_BODY": SYNC_BODY, "BENCH_RAMP_MS": str(int(ramp * 1000))},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0 or "requests in" not in text:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n{text}")
    return parse_wrk(text, target, connections, ramp)


# ---- processes ------------------------------------------------------------------------------

class Upstream:
    """The fake OpenAI upstream, its own process."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.bench.fake_openai", "--port", str(self.port)],
                                     cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"{self.url}/healthz", self.proc, f"the fake upstream (see {log})")
        except RuntimeError:
            self.stop()
            raise

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/_stats", timeout=5).json()

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


class LiteLLM:
    def __init__(self, data_dir: Path, upstream: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "LITELLM_PORT": str(self.port), "LITELLM_DATA_DIR": str(data_dir),
                    "LITELLM_UPSTREAM": f"{upstream}/v1", "LITELLM_MASTER_KEY": LITELLM_KEY}
        self.data_dir = data_dir

    def start(self) -> None:
        subprocess.run(["bash", str(ROOT / "deploy/local/litellm.sh"), "start"], env=self.env, check=True)

    def pid(self) -> int | None:
        return pid_from_file(self.data_dir)

    @staticmethod
    def version() -> str:
        """The pinned version litellm.sh installs (LITELLM_VERSION overrides it)."""
        m = re.search(r'LITELLM_VERSION:-([^}"]+)', (ROOT / "deploy/local/litellm.sh").read_text())
        return os.environ.get("LITELLM_VERSION") or (m.group(1) if m else "?")

    def stop(self) -> None:
        subprocess.run(["bash", str(ROOT / "deploy/local/litellm.sh"), "stop"], env=self.env, check=False,
                       stdout=subprocess.DEVNULL)


def mesh_pids(mesh) -> dict[str, int]:
    mesh_module = sys.modules["pixelmesh_local_mesh"]
    pids = {s: mesh.pid(s) for s in mesh_module.SERVICES}
    pids["kafka"] = pid_from_file(mesh.run_dir / "kafka")
    pids["minio"] = pid_from_file(mesh.run_dir / "minio")
    missing = [k for k, v in pids.items() if v is None]
    if missing:
        raise RuntimeError(f"mesh processes not running: {', '.join(missing)}")
    return pids  # type: ignore[return-value]


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    return {name: tree_cpu_seconds(pid) for name, pid in pids.items()}


def rss_of(pids: dict[str, int]) -> dict[str, float]:
    return {name: tree_rss_mb(pid) for name, pid in pids.items()}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


# ---- the events topic ------------------------------------------------------------------------

async def quiet(ends: Ends, seconds: float = 3.0, timeout: float = 60.0) -> bool:
    """Wait until no generation has ended for `seconds` (the mesh finished what it held)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = max(ends.times.values(), default=0.0)
        if time.monotonic() - last >= seconds:
            return True
        await asyncio.sleep(0.25)
    return False


def succeeded_between(ends: Ends, t0: float, t1: float) -> int:
    return sum(1 for i, t in ends.times.items() if t0 < t <= t1 and ends.ended.get(i) == gen.GENERATION_STATE_SUCCEEDED)


def succeeded(ends: Ends) -> int:
    return sum(1 for s in ends.ended.values() if s == gen.GENERATION_STATE_SUCCEEDED)


# ---- checks ----------------------------------------------------------------------------------

def sample(client: httpx.Client, url: str, key: str) -> tuple[bool, str, dict | None]:
    try:
        r = client.post(url, headers={"Authorization": f"Bearer {key}"}, content=SYNC_BODY, timeout=120)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}", None
    if r.status_code != 200:
        return False, f"HTTP {r.status_code}: {r.text[:300]}", None
    body = r.json()
    item = (body.get("data") or [{}])[0]
    if not (item.get("url") or item.get("b64_json")):
        return False, f"200 without an image: {r.text[:300]}", body
    return True, f"200, {'url' if item.get('url') else 'b64_json'} in {r.elapsed.total_seconds() * 1000:.0f} ms", body


def check_image(client: httpx.Client, url: str) -> tuple[bool, str]:
    try:
        r = client.get(url, timeout=30)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if r.status_code != 200:
        return False, f"HTTP {r.status_code}"
    try:
        image = Image.open(io.BytesIO(r.content))
        image.load()
    except Exception as exc:  # noqa: BLE001 (any undecodable body is the finding)
        return False, f"not an image: {exc}"
    return image.format == "PNG", f"{image.format} {image.width}x{image.height}, {len(r.content)} bytes"


async def ledger_check(res: "Results", edge: str, key: str, expected: int, when: str) -> None:
    """The captures in /api/v2/usage (pricing's ledger) reach the generations that succeeded."""
    captured, deadline = 0, time.monotonic() + 60
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        while True:
            r = await client.get(f"{edge}/api/v2/usage")
            rows = r.json().get("data", []) if r.status_code == 200 else []
            captured = sum(row["generations"] for row in rows if row["model"] == "dall-e-3")
            if captured >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
    res.check(f"ledger settled {when} (captures in /api/v2/usage = generations that succeeded on the events topic)",
              captured == expected, f"{captured:,} captured, {expected:,} succeeded")


# ---- results -----------------------------------------------------------------------------------

@dataclass
class Results:
    sync: dict[tuple[int, str, int], WrkRun] = field(default_factory=dict)  # (round, target, c)
    mesh_cpu: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)  # (round, c) -> per process s
    mesh_gens: dict[tuple[int, int], int] = field(default_factory=dict)
    own_cpu: dict[tuple[int, str, int], float] = field(default_factory=dict)  # LiteLLM / upstream CPU s per run
    rss: list[dict[str, float]] = field(default_factory=list)  # after each sync round
    rss_async: dict[str, float] = field(default_factory=dict)  # after the async part
    idle: dict[str, float] = field(default_factory=dict)  # % of one core
    idle_seconds: float = 0.0
    asyn: dict = field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))
        say(f"    [{'ok' if ok else 'FAIL'}] {name}: {detail}")


def mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def verdict(value: float | None, goal: float, higher_is_better: bool) -> str:
    if value is None:
        return "not measured"
    if (value >= goal) if higher_is_better else (value <= goal):
        return "met"
    factor = goal / value if higher_is_better else value / goal
    return f"missed by {factor:.1f}x" if value else "missed (0)"


# ---- the phases -------------------------------------------------------------------------------

async def sync_round(r: int, order: tuple[str, ...], urls: dict[str, str], keys: dict[str, str], args, res: Results,
                     ends: Ends, pids: dict[str, int], own: dict[str, int]) -> None:
    for c in POINTS:
        for target in order:
            await wrk(urls[target], keys[target], c, args.warmup, args.timeout, target)  # warm-up, not counted
            if target == "pixelmesh":
                await quiet(ends, timeout=90)
            cpu0, own0, t0 = cpu_of(pids), {k: tree_cpu_seconds(p) for k, p in own.items()}, time.monotonic()
            run = await wrk(urls[target], keys[target], c, args.duration, args.timeout, target, ramp=args.ramp)
            if target == "pixelmesh":
                await quiet(ends, timeout=90)  # what the run left in flight is part of its cost
            t1 = time.monotonic()
            res.sync[(r, target, c)] = run
            if target == "pixelmesh":
                res.mesh_cpu[(r, c)] = delta(cpu_of(pids), cpu0)
                res.mesh_gens[(r, c)] = succeeded_between(ends, t0, t1)
            else:
                res.own_cpu[(r, target, c)] = tree_cpu_seconds(own[target]) - own0[target]
            extra = ""
            if target == "pixelmesh":
                gens = res.mesh_gens[(r, c)]
                cpu = sum(res.mesh_cpu[(r, c)].values())
                extra = f"; mesh CPU {cpu:.1f} s for {gens} generations" + (f" = {1000 * cpu / gens:.0f} ms each" if gens else "")
            say(f"    round {r} c={c:<2} {LABEL[target]:9} {run.rps:9,.1f} req/s  p50 {fmt(run.p50_ms, 2):>7} ms  "
                f"p99 {fmt(run.p99_ms, 2):>7} ms  ok {run.ok}  non-2xx {run.non2xx}  timeouts {run.timeouts}  "
                f"socket errors {run.socket_errors}  no image {run.bad}{extra}")


async def async_submits(edge: str, key: str, args, run_dir: Path, ends: Ends, pids: dict[str, int]) -> dict:
    out_dir = run_dir / "submits"
    out_dir.mkdir()
    threads = wrk_threads(args.submit_concurrency)
    cmd = ["wrk", f"-t{threads}", f"-c{args.submit_concurrency}", f"-d{args.submit_max_seconds}s", "--latency",
           f"--timeout={args.timeout:g}s", "-s", str(BENCH / "wrk_submits.lua"), f"{edge}/api/v2/generate"]
    env = {**os.environ, "BENCH_KEY": key, "BENCH_BODY": ASYNC_BODY, "BENCH_TOTAL": str(args.submits),
           "BENCH_THREADS": str(threads), "BENCH_OUT": str(out_dir)}
    cpu0, started = cpu_of(pids), time.monotonic()
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    reader = asyncio.create_task(proc.communicate())
    while proc.returncode is None:
        files = list(out_dir.glob("submits-*.txt"))
        if len(files) == threads and all("DONE" in f.read_text(errors="replace") for f in files):
            proc.send_signal(signal.SIGINT)  # every submit answered: wrk prints its figures and ends
            break
        await asyncio.sleep(0.2)
    out, _ = await reader
    text = out.decode(errors="replace")
    run = parse_wrk(text, "pixelmesh", args.submit_concurrency)
    first, last, statuses, ids = None, None, {}, []
    for f in out_dir.glob("submits-*.txt"):
        for line in f.read_text(errors="replace").splitlines():
            parts = line.split()
            if parts[0] == "START":
                first = min(first, float(parts[1]) / 1000) if first else float(parts[1]) / 1000
            elif parts[0].isdigit():
                statuses[parts[0]] = statuses.get(parts[0], 0) + 1
                last = max(last or 0.0, float(parts[1]) / 1000)
                if parts[0] == "200" and parts[2].startswith("gen_"):
                    ids.append(parts[2])
    submitted = time.monotonic()
    accepted = len(ids)
    window = (last - first) if first and last else None
    say(f"    {accepted:,} accepted ({', '.join(f'HTTP {k}: {v:,}' for k, v in sorted(statuses.items()))}) "
        f"in {fmt(window, 2)} s = {fmt(ratio(accepted, window))}/s; submit p50 {fmt(run.p50_ms, 2)} ms, "
        f"p99 {fmt(run.p99_ms, 2)} ms; timeouts {run.timeouts}, socket errors {run.socket_errors}")
    id_set = set(ids)
    drained, drain_timeout = None, False
    say(f"    waiting for the {accepted:,} generations to end (at most {args.drain_timeout:.0f} s after the last submit) ...")
    deadline = submitted + args.drain_timeout
    while not id_set <= ends.ended.keys():
        if time.monotonic() > deadline:
            drain_timeout = True
            break
        await asyncio.sleep(0.25)
    cpu = delta(cpu_of(pids), cpu0)
    ended = [i for i in id_set if i in ends.ended]
    now = time.monotonic()
    recent = sum(1 for i in ended if now - ends.times[i] <= 30)  # the drain rate of the last 30 s
    if ended:
        drained = max(ends.times[i] for i in ended)
    ok = sum(1 for i in ended if ends.ended[i] == gen.GENERATION_STATE_SUCCEEDED)
    result = {
        "requested": args.submits, "accepted": accepted, "statuses": statuses, "window": window,
        "rate": ratio(accepted, window), "p50_ms": run.p50_ms, "p99_ms": run.p99_ms, "timeouts": run.timeouts,
        "socket_errors": run.socket_errors, "ended": len(ended), "succeeded": ok, "failed": len(ended) - ok,
        "pending": accepted - len(ended), "drain_timeout": drain_timeout,
        "drain_from_first": (drained - first) if drained and first else None,
        "drain_after_last": (drained - last) if drained and last else None,
        "quantiles": ends.quantiles(set(ended), first) if ended and first else "-",
        "drain_rate": recent / 30 if drain_timeout else None,
        "eta": (accepted - len(ended)) / (recent / 30) if drain_timeout and recent else None,
        "cpu": cpu, "cpu_ms_per_gen": ratio(1000 * sum(cpu.values()), ok),
        "raw": text,
    }
    say(f"    ended {len(ended):,} of {accepted:,} (succeeded {ok:,}, failed {len(ended) - ok:,}, "
        f"still pending {accepted - len(ended):,}{' at the drain timeout' if drain_timeout else ''}); "
        f"last one {fmt(result['drain_after_last'])} s after the last submit, {fmt(result['drain_from_first'])} s after the first; "
        f"{result['quantiles']}")
    return result


# ---- report ----------------------------------------------------------------------------------

def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, IndexError, ValueError):
        mem = f"{int(Path('/proc/meminfo').read_text().split()[1]) / 1024 / 1024:.0f} GiB"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({model}), {mem} RAM, load average {load}; {platform.platform()}"


def code_version() -> str:
    if label := os.environ.get("PIXELMESH_BENCH_CODE"):
        return label  # e.g. a snapshot of a commit, outside git
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "services", "libs"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"
    if not head:
        return "not a git checkout"
    return head + (f" + uncommitted changes in {len(dirty.splitlines())} files of services/ libs/" if dirty else "")


def report(res: Results, args, rounds: int, meta: dict) -> None:
    say("\n" + "=" * 100)
    say(f"make bench: pixelmesh vs LiteLLM {meta['litellm']} vs the bare upstream, {meta['date']}")
    say(f"machine: {meta['machine']}")
    say(f"code: {meta['code']}; wrk {meta['wrk']}; worker WORKER_MAX_IN_FLIGHT={args.worker_in_flight}, LOG_LEVEL={args.log_level}")
    say(f"sync: POST /v1/images/generations {SYNC_BODY}; wrk -t1 (c=1) / -t2, --timeout {args.timeout:g}s; per point a "
        f"{args.warmup:g} s warm-up run (and {args.first_warmup:g} s at c=16 on each before round 1), "
        f"then {args.ramp:g} + {args.duration:g} s: req/s = image answers of the last "
        f"{args.duration:g} s, percentiles of all {args.ramp + args.duration:g} s; {rounds} rounds, interleaved "
        f"(round 2 in reverse target order)")
    say("")
    head = (f"{'target':10} {'round':>5} | {'c=1 p50':>8} {'p99':>8} {'err':>4} | {'c=16 req/s':>10} {'p99':>8} {'err':>4} | "
            f"{'c=64 req/s':>10} {'p99':>8} {'err':>5}")
    say(head + "\n" + "-" * len(head))
    for target in TARGETS:
        for r in range(1, rounds + 1):
            c1, c16, c64 = (res.sync.get((r, target, c)) for c in POINTS)
            if not (c1 and c16 and c64):
                continue
            say(f"{LABEL[target]:10} {r:>5} | {fmt(c1.p50_ms, 2):>8} {fmt(c1.p99_ms, 2):>8} {c1.errors:>4} | "
                f"{c16.rps:>10,.1f} {fmt(c16.p99_ms, 1):>8} {c16.errors:>4} | {c64.rps:>10,.1f} {fmt(c64.p99_ms, 1):>8} {c64.errors:>5}")
    say("(ms; err = non-2xx + timeouts + socket errors + 200s without an image)")
    errors = [(k, v) for k, v in sorted(res.sync.items()) if v.errors]
    for (r, target, c), v in errors:
        say(f"  errors, round {r} {LABEL[target]} c={c}: non-2xx {v.non2xx}, timeouts {v.timeouts}, "
            f"socket errors {v.socket_errors}, 200 without image {v.bad} (of {v.requests} answers)")
    say("\nratio pixelmesh / LiteLLM (ms: lower is better; req/s: higher is better)")
    say(f"{'round':>5} | {'c=1 p50':>8} {'c=1 p99':>8} | {'c=16 req/s':>10} {'c=16 p99':>9} | {'c=64 req/s':>10} {'c=64 p99':>9} | peak req/s")
    for r in range(1, rounds + 1):
        pm = {c: res.sync.get((r, "pixelmesh", c)) for c in POINTS}
        ll = {c: res.sync.get((r, "litellm", c)) for c in POINTS}
        if not all(pm.values()) or not all(ll.values()):
            continue
        peak = ratio(max(pm[16].rps, pm[64].rps), max(ll[16].rps, ll[64].rps))
        say(f"{r:>5} | {fmt(ratio(pm[1].p50_ms, ll[1].p50_ms), 2):>7}x {fmt(ratio(pm[1].p99_ms, ll[1].p99_ms), 2):>7}x | "
            f"{fmt(ratio(pm[16].rps, ll[16].rps), 2):>9}x {fmt(ratio(pm[16].p99_ms, ll[16].p99_ms), 2):>8}x | "
            f"{fmt(ratio(pm[64].rps, ll[64].rps), 2):>9}x {fmt(ratio(pm[64].p99_ms, ll[64].p99_ms), 2):>8}x | {fmt(peak, 2)}x")

    # CPU per generation / per request
    say("\nCPU per request (utime+stime from /proc, over each measured run)")
    for c in POINTS:
        parts = []
        for target in ("upstream", "litellm"):
            per = [ratio(1000 * res.own_cpu[(r, target, c)], res.sync[(r, target, c)].ok)
                   for r in range(1, rounds + 1) if (r, target, c) in res.own_cpu]
            parts.append(f"{LABEL[target]} {fmt(mean(per))} ms")
        per_mesh = [ratio(1000 * sum(res.mesh_cpu[(r, c)].values()), res.mesh_gens[(r, c)])
                    for r in range(1, rounds + 1) if (r, c) in res.mesh_cpu]
        parts.append(f"pixelmesh mesh {fmt(mean(per_mesh))} ms per generation")
        say(f"  c={c:<2}: " + ", ".join(parts) + "   (LiteLLM: its one process; upstream: the fake)")
    key16 = [k for k in res.mesh_cpu if k[1] == 16]
    if key16:
        gens = sum(res.mesh_gens[k] for k in key16)
        names = list(res.mesh_cpu[key16[0]])
        say(f"  mesh CPU per generation at c=16, by process ({gens} generations over {len(key16)} runs):")
        for name in names:
            total = sum(res.mesh_cpu[k][name] for k in key16)
            say(f"    {name:8} {fmt(ratio(1000 * total, gens)):>6} ms")
        say(f"    {'total':8} {fmt(ratio(1000 * sum(sum(res.mesh_cpu[k].values()) for k in key16), gens)):>6} ms")

    # RSS and idle
    if res.rss:
        say("\nRSS per service after each sync round (MB)")
        names = list(res.rss[0])
        say("  " + " ".join(f"{n:>8}" for n in [*names, "total"]))
        for i, rss in enumerate([*res.rss, res.rss_async] if res.rss_async else res.rss):
            label = f"sync round {i + 1}" if i < len(res.rss) else "the async submits"
            say("  " + " ".join(f"{rss[n]:>8.0f}" for n in names) + f" {sum(rss.values()):>8.0f}   after {label}")
    if res.idle:
        say(f"\nidle CPU per process over {res.idle_seconds:.0f} s after the load (% of one core)")
        say("  " + ", ".join(f"{k} {v:.2f}" for k, v in res.idle.items()) + f"; whole mesh {sum(res.idle.values()):.2f} %")

    a = res.asyn
    if a:
        say(f"\nasync: {a['requested']:,} POST /api/v2/generate at c={args.submit_concurrency} ({ASYNC_BODY})")
        say(f"  accepted {a['accepted']:,} ({', '.join(f'HTTP {k}: {v:,}' for k, v in sorted(a['statuses'].items()))}) in "
            f"{fmt(a['window'], 2)} s = {fmt(a['rate'])}/s; submit p50 {fmt(a['p50_ms'], 2)} ms, p99 {fmt(a['p99_ms'], 2)} ms; "
            f"timeouts {a['timeouts']}, socket errors {a['socket_errors']}")
        say(f"  ended {a['ended']:,} (succeeded {a['succeeded']:,}, failed {a['failed']:,}), pending {a['pending']:,}"
            f"{' when the drain timeout (' + format(args.drain_timeout, 'g') + ' s) passed' if a['drain_timeout'] else ''}; "
            f"the last ended {fmt(a['drain_after_last'])} s after the last submit ({fmt(a['drain_from_first'])} s after the first)")
        say(f"  {a['quantiles']}")
        if a["drain_timeout"]:
            say(f"  the backlog was ending {fmt(a['drain_rate'])} generations/s over the last 30 s: "
                f"about {fmt(a['eta'])} s more to drain it")
        say(f"  mesh CPU per async generation {fmt(a['cpu_ms_per_gen'])} ms over the submits and the drain"
            f"{' (the pending ones included, so an overestimate)' if a['pending'] else ''} "
            f"({', '.join(f'{k} {v:.1f} s' for k, v in a['cpu'].items())})")

    say("\nchecks")
    for name, ok, detail in res.checks:
        say(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}")

    # targets
    say("\ntargets (issue 10)")
    rows = []
    pm_peak = mean([max(res.sync[(r, "pixelmesh", 16)].rps, res.sync[(r, "pixelmesh", 64)].rps)
                    for r in range(1, rounds + 1) if (r, "pixelmesh", 64) in res.sync])
    ll_peak = mean([max(res.sync[(r, "litellm", 16)].rps, res.sync[(r, "litellm", 64)].rps)
                    for r in range(1, rounds + 1) if (r, "litellm", 64) in res.sync])
    peak_ratio = ratio(pm_peak, ll_peak)
    rows.append(("sync peak req/s, pixelmesh / LiteLLM", f"{fmt(pm_peak)} / {fmt(ll_peak)} = {fmt(peak_ratio, 2)}x", ">= 2x",
                 verdict(peak_ratio, 2.0, True)))
    pm_p50 = mean([res.sync[(r, "pixelmesh", 1)].p50_ms for r in range(1, rounds + 1) if (r, "pixelmesh", 1) in res.sync])
    ll_p50 = mean([res.sync[(r, "litellm", 1)].p50_ms for r in range(1, rounds + 1) if (r, "litellm", 1) in res.sync])
    p50_ratio = ratio(pm_p50, ll_p50)
    rows.append(("c=1 p50, pixelmesh vs LiteLLM", f"{fmt(pm_p50)} vs {fmt(ll_p50)} ms = {fmt(p50_ratio, 2)}x", "<= 1x",
                 verdict(p50_ratio, 1.0, False)))
    if a:
        rows.append((f"async submits accepted/s (c={args.submit_concurrency})", f"{fmt(a['rate'])}/s", ">= 1,000/s",
                     verdict(a["rate"], 1000.0, True)))
        rows.append(("async submit p99", f"{fmt(a['p99_ms'])} ms", "< 100 ms", verdict(a["p99_ms"], 100.0, False)))
        complete = a["accepted"] == a["requested"] and a["succeeded"] == a["accepted"]
        rows.append(("async: every submit accepted and completed",
                     f"{a['succeeded']:,} of {a['requested']:,} ({a['requested'] - a['accepted']:,} not submitted within "
                     f"{args.submit_max_seconds} s, {a['failed']:,} failed, {a['pending']:,} pending)", "all",
                     "met" if complete else f"missed by {a['requested'] - a['succeeded']:,}"))
        rows.append(("async: backlog drained after the last submit",
                     f"{fmt(a['drain_after_last'])} s" if not a["drain_timeout"] else
                     f"not within {args.drain_timeout:g} s (~{fmt(a['eta'])} s more)", "(reported)", ""))
    per_gen = ratio(1000 * sum(sum(res.mesh_cpu[k].values()) for k in key16), sum(res.mesh_gens[k] for k in key16)) if key16 else None
    rows.append(("mesh CPU per generation (c=16)", f"{fmt(per_gen)} ms", "<= 15 ms", verdict(per_gen, 15.0, False)))
    if res.idle:
        idle = sum(res.idle.values())
        rows.append(("idle whole mesh", f"{idle:.2f} % of one core", "< 2 %", verdict(idle, 2.0, False)))
    if len(res.rss) >= 2:
        infra = ("kafka", "minio")
        r1, r2 = (sum(v for k, v in rss.items() if k not in infra) for rss in res.rss[:2])
        i1, i2 = (sum(v for k, v in rss.items() if k in infra) for rss in res.rss[:2])
        growth = 100 * (r2 - r1) / r1
        grew = max(res.rss[0], key=lambda k: res.rss[1][k] - res.rss[0][k] if k not in infra else -1e9)
        rows.append(("RSS of the services, sync round 1 -> 2",
                     f"{r1:.0f} -> {r2:.0f} MB ({growth:+.1f} %; most: {grew} {res.rss[1][grew] - res.rss[0][grew]:+.0f} MB; "
                     f"Kafka+MinIO {i1:.0f} -> {i2:.0f})", "not growing (<= 2 %)",
                     "met" if growth <= 2.0 else f"missed: {growth:+.1f} %"))
    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    for name, measured, goal, result in rows:
        say(f"  {name:{w}}  {measured:{v}}  {goal:22} {result}")
    say(f"\nreference (issue 10, LiteLLM 1.108): upstream c=1 p50 0.4 ms, c=16 2,956 req/s; LiteLLM 23.5 ms / 67 req/s; "
        f"pixelmesh 123 ms / 16 req/s")


# ---- main -------------------------------------------------------------------------------------

async def run(args) -> int:
    if not shutil.which("wrk"):
        say("make bench: wrk is not installed (`apt-get install -y wrk`; `make bench` does it)")
        return 2
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0:1]
    meta = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "code": code_version(),
            "wrk": (wrk_version[0].split()[1] if wrk_version else "?")}
    started = time.monotonic()
    mesh_module = load_mesh_module()
    run_dir = Path(tempfile.mkdtemp(prefix="pixelmesh-bench-gateway-"))
    say(f"make bench: {meta['date']}; {meta['machine']}")
    say(f"code: {meta['code']}; run folder {run_dir}")
    res = Results()
    upstream = litellm = mesh = None
    ends: Ends | None = None
    failed = False
    try:
        say("\n[setup] fake OpenAI upstream, the mesh (openai worker), the LiteLLM proxy ...")
        upstream = Upstream(run_dir / "fake_openai.log")
        ports = mesh_module.read_env_table()
        for key in list(ports):
            if key.endswith("_PORT"):
                ports[key] = str(free_port())
        ports["ROUTING_PROVIDERS"] = "openai"
        mesh = mesh_module.LocalMesh(
            run_dir=run_dir, ports=ports, api_key="pm-bench-" + secrets.token_urlsafe(12), log_level=args.log_level,
            extra_env={"SHUTDOWN_GRACE_SECONDS": "5", "WORKER_PROVIDER": "openai", "OPENAI_API_KEY": UPSTREAM_KEY,
                       "OPENAI_BASE_URL": f"{upstream.url}/v1", "WORKER_MAX_IN_FLIGHT": str(args.worker_in_flight)},
        )
        t = time.monotonic()
        mesh.up()
        say(f"    mesh up in {time.monotonic() - t:.1f} s (Kafka, MinIO, {', '.join(mesh_module.SERVICES)})")
        litellm = LiteLLM(run_dir / "litellm", upstream.url)
        meta["litellm"] = litellm.version()
        litellm.start()
        pids = mesh_pids(mesh)
        own = {"upstream": upstream.proc.pid, "litellm": litellm.pid()}
        edge = f"http://127.0.0.1:{ports['EDGE_HTTP_PORT']}"
        urls = {"upstream": f"{upstream.url}/v1/images/generations", "litellm": f"{litellm.url}/v1/images/generations",
                "pixelmesh": f"{edge}/v1/images/generations"}
        keys = {"upstream": UPSTREAM_KEY, "litellm": LITELLM_KEY, "pixelmesh": mesh.api_key}
        ends = Ends(f"127.0.0.1:{ports['KAFKA_PORT']}")
        await ends.start()

        say("\n[checks before the load]")
        with httpx.Client(headers={"Content-Type": "application/json"}) as client:
            for target in TARGETS:
                ok, detail, body = await asyncio.to_thread(sample, client, urls[target], keys[target])
                res.check(f"{LABEL[target]} sample request", ok, detail)
                if target == "pixelmesh" and ok and body["data"][0].get("url"):
                    res.check("pixelmesh image in MinIO", *await asyncio.to_thread(check_image, client, body["data"][0]["url"]))
                if target == "litellm" and ok:
                    res.check("LiteLLM answered with the upstream's image", body["data"][0].get("url", "").startswith(upstream.url),
                              body["data"][0].get("url") or "b64_json")

        if args.first_warmup > 0:
            # Kafka's JVM compiles its hot paths for its first minute or so (in one run it cost
            # 17 ms per generation at c=1 in that minute, 2 ms after it); LiteLLM gets the same.
            say(f"\n[warm-up] {args.first_warmup:g} s at c=16 against LiteLLM and pixelmesh, not counted ...")
            for target in ("litellm", "pixelmesh"):
                await wrk(urls[target], keys[target], 16, args.first_warmup, args.timeout, target)
            await quiet(ends, timeout=120)

        say(f"\n[sync] wrk, {args.duration:g} s per point after a {args.warmup:g} s warm-up, {args.rounds} rounds ...")
        for r in range(1, args.rounds + 1):
            order = TARGETS if r % 2 else tuple(reversed(TARGETS))
            await sync_round(r, order, urls, keys, args, res, ends, pids, own)
            await quiet(ends, timeout=120)
            res.rss.append(rss_of(pids))
            say(f"    RSS after round {r}: " + ", ".join(f"{k} {v:.0f}" for k, v in res.rss[-1].items())
                + f"; total {sum(res.rss[-1].values()):.0f} MB")

        say("\n[checks after the load]")
        with httpx.Client(headers={"Content-Type": "application/json"}) as client:
            ok, detail, body = await asyncio.to_thread(sample, client, urls["pixelmesh"], keys["pixelmesh"])
            res.check("pixelmesh sample request after the load", ok, detail)
            if ok and body["data"][0].get("url"):
                res.check("pixelmesh image in MinIO after the load",
                          *await asyncio.to_thread(check_image, client, body["data"][0]["url"]))
        stats = upstream.stats()
        res.check("fake upstream saw only image calls", not stats["other"] or set(stats["other_paths"]) <= {"GET /v1/models"},
                  f"{stats['generations']:,} generations, {stats['downloads']:,} downloads, other {stats['other_paths'] or 0}")

        await quiet(ends, timeout=120)
        sync_succeeded = succeeded(ends)
        await ledger_check(res, edge, mesh.api_key, sync_succeeded, "after the sync load")
        await ends.stop()  # the bench's own consumer would be the only Kafka client awake
        ends = None
        say(f"\n[idle] {args.idle_settle:g} s to settle, then CPU over {args.idle_seconds:g} s ...")
        await asyncio.sleep(args.idle_settle)
        cpu0, t0 = cpu_of(pids), time.monotonic()
        await asyncio.sleep(args.idle_seconds)
        res.idle_seconds = time.monotonic() - t0
        res.idle = {k: 100 * v / res.idle_seconds for k, v in delta(cpu_of(pids), cpu0).items()}
        say("    " + ", ".join(f"{k} {v:.2f} %" for k, v in res.idle.items()) + f"; whole mesh {sum(res.idle.values()):.2f} % of one core")

        ends = Ends(f"127.0.0.1:{ports['KAFKA_PORT']}")
        await ends.start()
        async_succeeded = 0
        if args.submits:
            say(f"\n[async] {args.submits:,} POST /api/v2/generate at c={args.submit_concurrency} ...")
            res.asyn = await async_submits(edge, mesh.api_key, args, run_dir, ends, pids)
            await quiet(ends, timeout=30)
            async_succeeded = succeeded(ends)
            res.rss_async = rss_of(pids)
            say("    RSS after the async submits: " + ", ".join(f"{k} {v:.0f}" for k, v in res.rss_async.items())
                + f"; total {sum(res.rss_async.values()):.0f} MB")
            if res.asyn["pending"]:
                res.check("ledger settled after the async submits", False,
                          f"not checked: {res.asyn['pending']:,} generations still pending at the drain timeout")
            else:
                await ledger_check(res, edge, mesh.api_key, sync_succeeded + async_succeeded, "after the async submits")
    except Exception as exc:  # noqa: BLE001 (report what broke, then clean up)
        failed = True
        say(f"\nmake bench: the harness failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    finally:
        try:
            if ends is not None:
                await ends.stop()
        finally:
            try:
                if litellm is not None:
                    litellm.stop()
            finally:
                try:
                    if mesh is not None:
                        mesh.down()
                finally:
                    if upstream is not None:
                        upstream.stop()
    if res.sync:
        meta.setdefault("litellm", "?")
        report(res, args, max((k[0] for k in res.sync), default=0), meta)
    say(f"\nmake bench (gateway) took {time.monotonic() - started:.0f} s")
    if failed:
        say(f"logs kept in {run_dir}")
        return 1
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="pixelmesh vs LiteLLM vs the bare upstream (issue 10)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk point")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of a separate wrk run before each point, not counted")
    parser.add_argument("--first-warmup", type=float, default=30.0,
                        help="seconds of c=16 load on LiteLLM and on pixelmesh before round 1, not counted (JIT, caches)")
    parser.add_argument("--ramp", type=float, default=5.0,
                        help="first seconds of each measured run whose answers req/s does not count (latencies do)")
    parser.add_argument("--rounds", type=int, default=2, help="sync rounds (RSS is compared across the first two)")
    parser.add_argument("--timeout", type=float, default=10.0, help="wrk --timeout: slower answers count as timeouts")
    parser.add_argument("--submits", type=int, default=10000, help="async submits (0: skip the async part)")
    parser.add_argument("--submit-concurrency", type=int, default=64)
    parser.add_argument("--submit-max-seconds", type=int, default=60, help="wrk -d cap of the submits")
    parser.add_argument("--drain-timeout", type=float, default=420.0, help="seconds after the last submit to wait for the backlog")
    parser.add_argument("--idle-settle", type=float, default=5.0)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--worker-in-flight", type=int, default=64, help="WORKER_MAX_IN_FLIGHT of the openai worker")
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the services")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs, data)")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(run(parse())))

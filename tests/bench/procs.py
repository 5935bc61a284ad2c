"""What the benchmarks read about processes (from /proc) and how they load the local mesh."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def load_mesh_module():
    """deploy/local/mesh.py as a module (it is a script, not a package)."""
    if "pixelmesh_local_mesh" in sys.modules:
        return sys.modules["pixelmesh_local_mesh"]
    spec = importlib.util.spec_from_file_location("pixelmesh_local_mesh", ROOT / "deploy/local/mesh.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pixelmesh_local_mesh"] = module
    spec.loader.exec_module(module)
    return module


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def pid_from_file(folder: Path) -> int | None:
    """The pid kafka.sh / minio.sh / litellm.sh recorded in FOLDER/*.pid, if it is alive."""
    for candidate in folder.glob("*.pid"):
        try:
            pid = int(candidate.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (ValueError, OSError):
            continue
    return None


def descendants(pid: int) -> list[int]:
    """PID and every live process below it (a server that forks workers is counted whole)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _tree_sum(pid: int, read) -> float:  # noqa: ANN001
    total = 0.0
    for p in descendants(pid):
        try:
            total += read(p)
        except OSError:
            pass  # ended meanwhile
    return total


def tree_cpu_seconds(pid: int) -> float:
    return _tree_sum(pid, cpu_seconds)


def tree_rss_mb(pid: int) -> float:
    return _tree_sum(pid, rss_mb)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it is still there after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    """Until `url` answers 2xx; RuntimeError naming `what` when `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)

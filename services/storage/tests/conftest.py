"""A real MinIO server for tests, on free ports in a temporary directory.

`start_minio(tmp_path)` is a plain function so other test suites can reuse it; the
`minio_server` fixture wraps it for one pytest session. The binary is the one
`deploy/local/minio.sh install` builds (override with MINIO_BIN). A missing binary
fails the tests: they never fall back to a fake.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
MINIO_BIN = Path(os.environ.get("MINIO_BIN") or REPO_ROOT / ".cache" / "bin" / "minio")

MinioServer = tuple[str, str, str, Callable[[], None]]


def free_port() -> int:
    """A port that was free a moment ago (the OS picks it; a race is possible but rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{endpoint}/minio/health/ready", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_minio(
    tmp_path: Path, *, port: int | None = None, binary: Path = MINIO_BIN, timeout: float = 60.0
) -> MinioServer:
    """Start MinIO with its data under `tmp_path`; return (endpoint, access key, secret key, stop).

    `endpoint` is 127.0.0.1:<port> (plain HTTP; a free port unless `port` is given).
    Blocks until MinIO reports ready. `stop()` terminates only the process started here.
    """
    if not os.access(binary, os.X_OK):
        raise FileNotFoundError(f"no MinIO binary at {binary}; build it with `deploy/local/minio.sh install`")
    access, secret = "pixelmesh-test", "pixelmesh-test-secret"
    endpoint = f"127.0.0.1:{port or free_port()}"
    drive = tmp_path / "data"
    drive.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / "minio.log"
    env = {
        **os.environ,
        "MINIO_ROOT_USER": access,
        "MINIO_ROOT_PASSWORD": secret,
        "MINIO_UPDATE": "off",
        "MINIO_BROWSER_REDIRECT": "off",
    }
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(binary), "server", "--quiet", "--address", endpoint,
             "--console-address", f"127.0.0.1:{free_port()}", str(drive)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    deadline = time.monotonic() + timeout
    while not _ready(endpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop()
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"MinIO did not become ready on {endpoint} (exit {proc.returncode}):\n{tail}")
        time.sleep(0.2)
    return endpoint, access, secret, stop


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    return free_port


@pytest.fixture
def minio_launcher() -> Iterator[Callable[..., MinioServer]]:
    """`start_minio` for one test; whatever it starts is stopped at teardown."""
    stops: list[Callable[[], None]] = []

    def launch(tmp_path: Path, **kw: Any) -> MinioServer:
        server = start_minio(tmp_path, **kw)
        stops.append(server[3])
        return server

    yield launch
    for stop in stops:
        stop()


@pytest.fixture(scope="session")
def minio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """(endpoint, access key, secret key) of a MinIO shared by the session."""
    try:
        endpoint, access, secret, stop = start_minio(tmp_path_factory.mktemp("minio"))
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield endpoint, access, secret
    finally:
        stop()

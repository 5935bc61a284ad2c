"""A real MinIO server for tests, on free ports in a temporary directory.

`start_minio(tmp_path)` runs the project's own `deploy/local/minio.sh` (the same
script `make up` uses, which builds MinIO if it is missing) with its data dir under
`tmp_path`; the `minio_server` fixture wraps it for one pytest session.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[3]
MINIO_SH = REPO_ROOT / "deploy" / "local" / "minio.sh"
ACCESS_KEY, SECRET_KEY = "pixelmesh-test", "pixelmesh-test-secret"

MinioServer = tuple[str, str, str, Callable[[], None]]


def start_minio(tmp_path: Path, *, port: int | None = None) -> MinioServer:
    """Start MinIO with its data under `tmp_path`; return (endpoint, access key, secret key, stop).

    Blocks until MinIO reports ready. `stop()` stops only the instance started here.
    """
    port = port or free_port()
    env = {
        **os.environ,
        "MINIO_PORT": str(port),
        "MINIO_CONSOLE_PORT": str(free_port()),
        "MINIO_DATA_DIR": str(tmp_path),
        "MINIO_ROOT_USER": ACCESS_KEY,
        "MINIO_ROOT_PASSWORD": SECRET_KEY,
    }
    subprocess.run(["bash", str(MINIO_SH), "start"], env=env, check=True, stdout=subprocess.DEVNULL)

    def stop() -> None:
        subprocess.run(["bash", str(MINIO_SH), "stop"], env=env, check=True, stdout=subprocess.DEVNULL)

    return f"127.0.0.1:{port}", ACCESS_KEY, SECRET_KEY, stop


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
    endpoint, access, secret, stop = start_minio(tmp_path_factory.mktemp("minio"))
    try:
        yield endpoint, access, secret
    finally:
        stop()

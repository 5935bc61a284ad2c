"""Generate the Python code and type stubs of protos/ into libs/apis/src (`make protos`).

protoc comes from grpcio-tools and the stubs from mypy-protobuf, so generation needs
nothing outside the venv. The google/* protos our files import are taken from the
installed googleapis-common-protos wheel (never copied into the repo) and staged in
an include folder; `--check` regenerates into a temporary folder and fails when the
committed code differs, which is how the tests catch stale generated code.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from google.api import annotations_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
OUT = Path(__file__).resolve().parent / "src"
DEPS = ROOT / ".cache" / "protodeps"
PACKAGE = "pixelmesh"


def stage_google_protos(dest: Path = DEPS) -> Path:
    """Copy the google/* .proto files of googleapis-common-protos into an include dir.

    The wheel ships google/longrunning/operations.proto as operations_proto.proto
    (to keep the module name free for a compatibility shim); the descriptor inside
    is still registered as operations.proto, so it is staged under that name.
    """
    site_google = Path(annotations_pb2.__file__).resolve().parent.parent
    for src in site_google.rglob("*.proto"):
        rel = src.relative_to(site_google.parent)
        if rel.name == "operations_proto.proto":
            rel = rel.with_name("operations.proto")
        target = dest / rel
        if not target.exists() or target.read_bytes() != src.read_bytes():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
    return dest


def generate(out: Path) -> None:
    deps = stage_google_protos()
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    # protoc finds the mypy plugins (protoc-gen-mypy*) on PATH, next to this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{deps}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:  # mypy-protobuf also prints "Writing mypy to ..." lines
        raise SystemExit("protoc failed")
    pkg = out / PACKAGE
    # pixelmesh/ is a namespace package (several distributions could share it); the
    # versioned subpackages are regular packages so that type checkers find the stubs.
    for folder in pkg.rglob("*"):
        if folder.is_dir():
            (folder / "__init__.py").touch()
    (pkg / "py.typed").touch()


def diff(a: Path, b: Path) -> list[str]:
    """Paths that differ between two generated trees (ignoring caches)."""
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out: list[str] = []

    def walk(c: filecmp.dircmp, prefix: str) -> None:
        out.extend(prefix + n for n in c.left_only + c.right_only + c.diff_files)
        for name, sub in c.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(cmp, "")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    opts = parser.parse_args()
    if opts.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = diff(OUT / PACKAGE, Path(tmp) / PACKAGE)
        if stale:
            print("generated code is stale, run `make protos`:", *stale, sep="\n  ", file=sys.stderr)
            return 1
        print("generated code is up to date")
        return 0
    shutil.rmtree(OUT / PACKAGE, ignore_errors=True)
    generate(OUT)
    print(f"generated {OUT / PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

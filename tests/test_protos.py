"""Generated code matches protos/, and the protos are buf-lint (STANDARD) clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_fresh() -> None:
    r = subprocess.run([sys.executable, "libs/apis/generate.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_buf_lint_is_clean() -> None:
    subprocess.run(["bash", "deploy/local/buf.sh", "install"], cwd=ROOT, check=True)
    r = subprocess.run([str(ROOT / ".cache/node/node_modules/.bin/buf"), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

"""Reading an operator's YAML files (the catalog, the price table, their extra files): a
file that cannot be served fails the start with a message naming the file and the entry."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError


def read_mapping(path: Path, error: type[ValueError]) -> dict:
    """The YAML mapping in `path`; `error` (naming the file) when it is unreadable or not a mapping."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{path}: cannot be read as YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise error(f"{path}: is not a YAML mapping")
    return raw


def reason(exc: Exception) -> str:
    """What is wrong with an entry, one `field: message` per validation error."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    return "; ".join(f"{'.'.join(map(str, e['loc'])) + ': ' if e['loc'] else ''}{e['msg']}" for e in exc.errors())

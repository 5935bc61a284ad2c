"""What the test mesh serves: the catalog's models (and its operator catalog files') whose providers routing enables."""

from __future__ import annotations

from pathlib import Path

from routing.catalog import Catalog


def served_model_ids(mesh) -> list[str]:
    enabled = {p for p in mesh.ports["ROUTING_PROVIDERS"].split(",") if p}
    extra = tuple(Path(p) for p in mesh.extra_env.get("ROUTING_EXTRA_CATALOGS", "").split(",") if p)
    return [entry.id for entry in Catalog.load(enabled, extra=extra).available()]

"""What the test mesh serves: the catalog's models whose providers routing enables."""

from __future__ import annotations

from routing.catalog import Catalog


def served_model_ids(mesh) -> list[str]:
    enabled = {p for p in mesh.ports["ROUTING_PROVIDERS"].split(",") if p}
    return [entry.id for entry in Catalog.load(enabled).available()]

"""The telemetry registry lists exactly the custom names the code emits."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = yaml.safe_load((ROOT / "libs/svckit/src/svckit/telemetry_registry.yaml").read_text())
SOURCES = [p for d in ("services", "libs") for p in (ROOT / d).rglob("src/**/*.py") if "/pixelmesh/" not in str(p)]

ATTRIBUTE_USES = [
    re.compile(r'set_attribute\(\s*"(pixelmesh\.[a-z_.]+)"'),
    re.compile(r'"(pixelmesh\.[a-z_.]+)"\s*:'),  # keys of attributes={...}
]
METRIC_TYPES = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram", "Summary": "summary"}


def used(patterns: list[re.Pattern[str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in SOURCES:
        text = path.read_text()
        for pattern in patterns:
            for name in pattern.findall(text):
                found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_custom_span_attribute_is_registered_and_every_registered_one_used() -> None:
    attributes = used(ATTRIBUTE_USES)
    assert attributes, "the scan found no attribute at all: the patterns are broken"
    missing = {name: where for name, where in attributes.items() if name not in REGISTRY["attributes"]}
    assert not missing, f"add these to telemetry_registry.yaml: {missing}"
    unused = set(REGISTRY["attributes"]) - set(attributes)
    assert not unused, f"registered but never set: {sorted(unused)}"


def defined_metrics() -> dict[str, tuple[str, list[str], str]]:
    """name -> (type, labels, file) of every prometheus_client metric constructed in the code."""
    found = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in METRIC_TYPES):
                continue
            if not node.args or not isinstance(node.args[0], ast.Constant):
                continue
            labels_node = node.args[2] if len(node.args) > 2 else None
            labels = [e.value for e in labels_node.elts] if isinstance(labels_node, ast.List) else []
            found[node.args[0].value] = (METRIC_TYPES[node.func.id], labels, str(path.relative_to(ROOT)))
    return found


def test_every_metric_is_registered_with_its_type_and_labels() -> None:
    metrics = defined_metrics()
    assert len(metrics) >= 5
    missing = {name: where for name, where in metrics.items() if name not in REGISTRY["metrics"]}
    assert not missing, f"add these to telemetry_registry.yaml: {missing}"
    unused = set(REGISTRY["metrics"]) - set(metrics)
    assert not unused, f"registered but never defined: {sorted(unused)}"
    assert all(name.startswith("pixelmesh_") for name in metrics)
    for name, (kind, labels, where) in metrics.items():
        entry = REGISTRY["metrics"][name]
        assert (entry["type"], entry["labels"]) == (kind, labels), f"{name} in {where} differs from the registry"

"""ComfyUI workflow templates: the operator's files that make a ComfyUI server a catalog model.

`COMFYUI_WORKFLOWS` names a folder; each `<catalog model id>.json` in it is one model:

    {"workflow": {<API-format workflow: node id -> {"class_type", "inputs"}>},
     "inputs": {"prompt": ["6", "text"], "negative_prompt": ["7", "text"], "seed": ["3", "seed"],
                "width": ["5", "width"], "height": ["5", "height"], "n": ["5", "batch_size"],
                "steps": ["3", "steps"], "image": ["10", "image"]},
     "steps": 30}

`inputs` maps each request field onto one node input (`prompt` is required, the rest as the
workflow has them); `steps`, when given, is written to the `steps` input (the request has no
steps field). The worker checks every template at start-up and stops naming the file and
the entry: JSON, node ids, inputs that exist and hold values (not links), links that point
at nodes. What a request may send is the catalog's to check; a field the template cannot
take is refused here (a negative prompt with no node for it, n > 1 without a batch size).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from worker.providers.base import ProviderError
from worker.providers.options import provider_options

FIELDS = ("prompt", "negative_prompt", "seed", "width", "height", "n", "steps", "image")
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Template:
    model: str
    workflow: dict
    inputs: dict[str, tuple[str, str]]
    steps: int = 0

    def fill(self, generation: gen.Generation, image: str = "") -> dict:
        """The workflow with the generation's fields in their nodes (a copy)."""
        p = generation.params
        n = p.n or 1
        values: dict[str, object] = {"prompt": p.prompt, "seed": generation.seed % (MAX_SEED + 1)}
        if p.negative_prompt:
            values["negative_prompt"] = p.negative_prompt
        if generation.width and generation.height:
            values["width"], values["height"] = generation.width, generation.height
        if n > 1 or "n" in self.inputs:
            values["n"] = n
        steps = provider_options(generation).get("steps", self.steps)
        if steps:
            values["steps"] = steps
        if image:
            values["image"] = image
        elif "image" in self.inputs:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{self.model} needs an input image")
        # A field the workflow has no node input for is refused, never silently dropped.
        missing = [f for f in ("negative_prompt", "n", "image", "steps") if f in values and f not in self.inputs]
        if missing:
            field = {"n": "n > 1", "image": "an input image"}.get(missing[0], missing[0])
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{self.model}'s workflow takes no {field}")
        workflow = copy.deepcopy(self.workflow)
        for field, value in values.items():
            if field in self.inputs:
                node, name = self.inputs[field]
                workflow[node]["inputs"][name] = value
        return workflow


class TemplateError(ValueError):
    """A template the worker cannot serve: the message names the file and the entry."""


def load_templates(folder: Path) -> dict[str, Template]:
    """Every `*.json` template of the folder by catalog model id (the file's name)."""
    if not folder.is_dir():
        raise TemplateError(f"{folder} is not a folder of workflow templates")
    templates = {path.stem: load_template(path) for path in sorted(folder.glob("*.json"))}
    if not templates:
        raise TemplateError(f"{folder} holds no workflow template (<catalog model id>.json)")
    return templates


def load_template(path: Path) -> Template:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TemplateError(f"{path}: not readable as JSON ({exc})") from exc
    if not isinstance(raw, dict) or set(raw) - {"workflow", "inputs", "steps", "description"}:
        raise TemplateError(f"{path}: a template has `workflow`, `inputs` and optional `steps`, `description`")
    workflow = raw.get("workflow")
    if not isinstance(workflow, dict) or not workflow:
        raise TemplateError(f"{path}: workflow: an API-format workflow (node id -> class_type, inputs) is required")
    for node, spec in workflow.items():
        if not (
            isinstance(spec, dict) and isinstance(spec.get("class_type"), str) and isinstance(spec.get("inputs"), dict)
        ):
            raise TemplateError(f"{path}: workflow.{node}: needs class_type (a string) and inputs (an object)")
        for name, value in spec["inputs"].items():
            if _is_link(value) and str(value[0]) not in workflow:
                raise TemplateError(
                    f"{path}: workflow.{node}.inputs.{name}: links to node {value[0]!r}, which is absent"
                )
    inputs = raw.get("inputs")
    if not isinstance(inputs, dict) or "prompt" not in inputs:
        raise TemplateError(f"{path}: inputs: maps request fields onto [node, input]; `prompt` is required")
    mapped: dict[str, tuple[str, str]] = {}
    for field, target in inputs.items():
        where = f"{path}: inputs.{field}"
        if field not in FIELDS:
            raise TemplateError(f"{where}: not a request field ({', '.join(FIELDS)})")
        if not (isinstance(target, list) and len(target) == 2 and all(isinstance(t, str) for t in target)):
            raise TemplateError(f"{where}: must be [node id, input name], both strings")
        node, name = target
        if node not in workflow:
            raise TemplateError(f"{where}: node {node!r} is not in the workflow")
        if name not in workflow[node]["inputs"]:
            raise TemplateError(f"{where}: node {node} ({workflow[node]['class_type']}) has no input {name!r}")
        if _is_link(workflow[node]["inputs"][name]):
            raise TemplateError(f"{where}: node {node}'s {name!r} is a link, not a value")
        mapped[field] = (node, name)
    if ("width" in mapped) != ("height" in mapped):
        raise TemplateError(f"{path}: inputs: width and height are mapped together")
    steps = raw.get("steps", 0)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0 or steps and "steps" not in mapped:
        raise TemplateError(f"{path}: steps: a positive integer, with inputs.steps naming where it goes")
    return Template(path.stem, workflow, mapped, steps)


def _is_link(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and not isinstance(value[1], bool)

"""The generations core of the edge: submit (with input images), get, watch, wait, cancel, list.

Transport-free: it takes the caller, GenerationParams and checked `Upload`s, and answers
Generation messages or raises GatewayError; it knows no HTTP. The OpenAI, /api/v2 and
Midjourney routes are thin adapters over it: they parse their dialect's request, call the
core, and present the result with `presenters` in their own shape (errors in their own
format). Every read is made for the caller's account, which status enforces: another
account's generation is NOT_FOUND, exactly like a missing one.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from opentelemetry import trace

from edge.inputs import Input, Upload, check_mask, check_rule, fit_size
from edge.mesh import Caller, Mesh, new_upload_id
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.routing.v1 import routing_service_pb2 as routing_pb

# The request being served, as the metrics middleware sees it: a submit notes the model
# here (a dict shared by reference, since the route may run in another task than the middleware).
REQUEST_LABELS: ContextVar[dict[str, str] | None] = ContextVar("request_labels", default=None)


def annotate(generation: gen.Generation) -> None:
    labels = REQUEST_LABELS.get()
    if labels is not None:
        labels["model"] = generation.model
    span = trace.get_current_span()
    span.set_attribute("pixelmesh.generation.id", generation.id)
    span.set_attribute("pixelmesh.model", generation.model)


@dataclass(frozen=True)
class Submitted:
    generation: gen.Generation
    # True when the Idempotency-Key had already made this generation (a retried submit).
    replayed: bool


def input_rule(model: routing_pb.Model, kind: gen.GenerationKind.ValueType) -> routing_pb.ImageInputRule | None:
    """The model's rule for the inputs of an edit or a variation (None for other kinds)."""
    if kind == gen.GENERATION_KIND_EDIT:
        return model.edits
    if kind == gen.GENERATION_KIND_VARIATION:
        return model.variations
    return None


class Generations:
    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    async def submit(
        self, caller: Caller, params: gen.GenerationParams, *, idempotency_key: str = "", uploads: Sequence[Input] = ()
    ) -> Submitted:
        """Admit a generation; with inputs (uploads, or URLs the worker reads), everything is
        checked before the uploads are stored."""
        if uploads:
            await self._attach(caller, params, uploads)
        generation, replayed = await self._mesh.submit(caller, params, idempotency_key=idempotency_key)
        annotate(generation)
        return Submitted(generation, replayed)

    async def _attach(self, caller: Caller, params: gen.GenerationParams, inputs: Sequence[Input]) -> None:
        """Validate everything first, store after: routing's dry run (with placeholders for
        the uploads), then every upload against the model's rule for this route; only then
        are the files stored, under one upload id, and put in the params in the order the
        client gave its inputs (workers read them from storage by object key, and the URLs
        the client named from there). A refused request leaves nothing in storage. Inputs the
        params already name (URLs a route put there itself, read by the worker) are kept, first."""
        named = list(params.input_images)
        params.input_images.extend(
            gen.InputImage(object_key="pending", role=i.role) if isinstance(i, Upload) else i.ref() for i in inputs
        )
        checked = await self._mesh.validate(params)
        rule = input_rule(checked.model, params.kind)
        uploads = [i for i in inputs if isinstance(i, Upload)]
        first = inputs[0]
        if rule is not None:
            for upload in uploads:
                check_rule(upload, rule, checked.model.id)
            masks = [u for u in uploads if u.role == "mask"]
            if masks and isinstance(first, Upload) and first.role != "mask":
                check_mask(masks[0], first)
            if checked.size == "auto" and isinstance(first, Upload):
                params.size = fit_size(list(rule.sizes), first.width, first.height) or "auto"
        stored = iter(await self.store_inputs(caller, uploads) if uploads else [])
        refs = [next(stored) if isinstance(i, Upload) else i.ref() for i in inputs]
        del params.input_images[:]
        params.input_images.extend(named + refs)

    async def store_inputs(self, caller: Caller, uploads: Sequence[Upload]) -> list[gen.InputImage]:
        """Store checked uploads under one new upload id, in order."""
        upload_id = new_upload_id()
        stored = await asyncio.gather(*(self._mesh.store_input(caller, upload_id, i, u) for i, u in enumerate(uploads)))
        return list(stored)

    async def get(self, caller: Caller, generation_id: str) -> gen.Generation:
        return await self._mesh.generation(caller, generation_id)

    async def list(self, caller: Caller, generation_ids: list[str]) -> list[gen.Generation]:
        """The caller's generations among the ids, in order (unknown and others' left out)."""
        return await self._mesh.generations(caller, generation_ids) if generation_ids else []

    def watch(self, caller: Caller, generation_id: str, timeout: float) -> AsyncIterator[gen.Generation]:
        """Every state until a terminal one; TIMEOUT after `timeout` seconds."""
        return self._mesh.watch(caller, generation_id, timeout)

    async def wait(self, caller: Caller, generation_id: str, timeout: float) -> gen.Generation:
        """The terminal state; TIMEOUT when the generation has not ended within `timeout` seconds."""
        return await self._mesh.wait_terminal(caller, generation_id, timeout)

    async def cancel(self, caller: Caller, generation_id: str, reason: str) -> gen.Generation:
        """The generation in its CANCELLED state; CONFLICT when it already ended."""
        return await self._mesh.cancel(caller, generation_id, reason)

    # builtins.list: in this class `list` is the method above.
    async def image_urls(self, generation: gen.Generation) -> builtins.list[str]:
        """The presigned URLs of a succeeded generation's images, in order ([] before it succeeded)."""
        if generation.state != gen.GENERATION_STATE_SUCCEEDED:
            return []
        return list(await asyncio.gather(*(self._mesh.image_url(ref) for ref in generation.images)))

    async def images_b64(self, generation: gen.Generation) -> builtins.list[str]:
        return list(await asyncio.gather(*(self._mesh.image_b64(ref) for ref in generation.images)))

    async def image_b64(self, ref: gen.ImageRef) -> str:
        return await self._mesh.image_b64(ref)

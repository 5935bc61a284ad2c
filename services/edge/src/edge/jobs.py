"""The aggregators' submit-then-poll API: /api/v2/generate."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from edge.deps import annotate, auth, json_body, mesh_dep
from edge.mesh import Caller, Mesh
from edge.presenters import v2_generation
from edge.schemas import GenerateBody, parse_body

router = APIRouter()


@router.post("/api/v2/generate")
async def v2_submit(request: Request, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    body = parse_body(GenerateBody, await json_body(request))
    generation = await mesh.submit(who, body.to_params(default_format="webp"))
    annotate(generation)
    return JSONResponse(await v2_generation(mesh, generation))


@router.get("/api/v2/generate/{generation_id}")
async def v2_get(generation_id: str, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    return JSONResponse(await v2_generation(mesh, await mesh.generation(who, generation_id)))

"""GET /api/v2/usage: what the caller's account spent, per day, model and key.

Answers from pricing's ledger (GetUsage), called with the caller's own API key, so the
edge can only ever read the account behind the key it was given.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from edge.deps import auth, mesh_dep
from edge.mesh import CALL_TIMEOUT, Caller, Mesh
from pixelmesh.pricing.v1 import pricing_service_pb2 as pricing_pb
from presenters.catalog import usage_report
from svckit.errors import rpc_errors

router = APIRouter()


@router.get("/api/v2/usage")
async def usage(
    request: Request, start_date: str = "", end_date: str = "", who: Caller = auth, mesh: Mesh = mesh_dep
) -> JSONResponse:
    """Query: start_date, end_date (YYYY-MM-DD, UTC, inclusive; default the last 30 days)."""
    with rpc_errors():
        r = await mesh.pricing.GetUsage(
            pricing_pb.GetUsageRequest(start_date=start_date, end_date=end_date),
            metadata=(("authorization", request.headers.get("authorization", "")),),
            timeout=CALL_TIMEOUT,
        )
    return JSONResponse(usage_report(r))

"""Liveness, readiness and Prometheus metrics (no key needed: probes and scrapers call them)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.ingest.context import Ctx

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready: see which part"}})
async def readyz(ctx: Ctx) -> JSONResponse:
    """Ready once Kafka takes writes and the tag definitions have been read from their topic."""
    body = {"kafka": ctx.publisher.ready, "definitions_loaded": ctx.definitions.ready}
    ready = all(body.values())
    return JSONResponse(body | {"ready": ready}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics(ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

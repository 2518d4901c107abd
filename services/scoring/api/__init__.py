"""Scoring HTTP API (`/v1`): one router per concern, composed here."""

from fastapi import APIRouter

from scoring.api import legacy, reports, rounds, scores

router = APIRouter(prefix="/v1")
router.include_router(scores.router)
router.include_router(rounds.router)
router.include_router(reports.router)
router.include_router(legacy.router)

__all__ = ["router"]

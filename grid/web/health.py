"""Sync health pages: per-source runs and freshness, quarantine trend and drill-down, reprocessing."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)

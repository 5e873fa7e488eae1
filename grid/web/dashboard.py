"""Province and city monitoring pages: the four fulls, trends, choropleth, ranking, exports."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)

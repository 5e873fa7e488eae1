"""Money amounts of cases: the one parser lives in :mod:`connectors.amounts` (the sync's validation
reads amounts there too, and connectors may not import grid); the case service, the CLI and the
web use it through this name."""

from __future__ import annotations

from connectors.amounts import MAX_YUAN, AmountError, parse_yuan

__all__ = ["MAX_YUAN", "AmountError", "parse_yuan"]

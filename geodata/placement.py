"""Place a batch of records: CRS → WGS84, point → cell, else address → lowest division.

This wires :mod:`geodata.crs`, :class:`geodata.cellindex.CellIndex` and
:class:`geodata.address.AddressLocator` for one batch (a page of records). Every row comes out
with a method and, when it has no cell, a reason — nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from geodata.address import AddressLocator
from geodata.cellindex import CellIndex
from geodata.crs import parse_crs, to_wgs84

NO_LOCATION = "no_location"


@dataclass(frozen=True)
class PlacedBatch:
    """Per-row placement, all sequences of the batch's length."""

    lon: NDArray[np.float64]  # WGS84, NaN when the row has no point
    lat: NDArray[np.float64]
    cell_code: list[str | None]
    division_code: list[str | None]
    method: list[str]
    reason: list[str | None]

    def take(self, rows: Sequence[int]) -> PlacedBatch:
        """The placement of the chosen rows only, in the given order."""
        idx = np.asarray(rows, dtype=np.intp)
        return PlacedBatch(
            lon=self.lon[idx],
            lat=self.lat[idx],
            cell_code=[self.cell_code[i] for i in rows],
            division_code=[self.division_code[i] for i in rows],
            method=[self.method[i] for i in rows],
            reason=[self.reason[i] for i in rows],
        )


def place_batch(
    lon: Sequence[float | None],
    lat: Sequence[float | None],
    crs: Sequence[str | None],
    addresses: Sequence[str | None],
    *,
    index: CellIndex,
    locator: AddressLocator | None,
    region: str | None = None,
) -> PlacedBatch:
    """Place each row; rows with a point must carry a known CRS (validation guarantees it).

    ``region`` (the city a source covers) bounds address matches: see :class:`AddressLocator`.
    """
    n = len(lon)
    x = np.array([np.nan if v is None else v for v in lon], dtype=np.float64)
    y = np.array([np.nan if v is None else v for v in lat], dtype=np.float64)
    has_point = ~(np.isnan(x) | np.isnan(y))
    wx = np.full(n, np.nan)
    wy = np.full(n, np.nan)
    crs_arr = np.array([c or "" for c in crs], dtype=object)
    for name in sorted(set(crs_arr[has_point].tolist())):
        sel = has_point & (crs_arr == name)
        wx[sel], wy[sel] = to_wgs84(x[sel], y[sel], parse_crs(name))

    cell_code: list[str | None] = [None] * n
    division_code: list[str | None] = [None] * n
    method: list[str] = ["unmapped"] * n
    reason: list[str | None] = [NO_LOCATION] * n

    idx = np.flatnonzero(has_point)
    if idx.size:
        placed = index.place(wx[idx], wy[idx])
        for j, i in enumerate(idx.tolist()):
            code = placed.cell_code[j]
            if code is not None:
                cell_code[i] = code
                division_code[i] = code[:12]
                method[i] = str(placed.method[j])
                reason[i] = None
            else:
                reason[i] = placed.reason[j]

    todo = [i for i in range(n) if cell_code[i] is None and addresses[i]]
    if todo and locator is not None:
        matches = locator.locate([addresses[i] or "" for i in todo], region=region)
        for i, m in zip(todo, matches, strict=True):
            if m.code is not None:
                division_code[i] = m.code
                method[i] = m.method
                # A point that missed every cell keeps its reason; an address-only row has none.
                reason[i] = reason[i] if has_point[i] else None
            elif not has_point[i]:
                reason[i] = m.reason or "address_unmatched"
    return PlacedBatch(
        lon=wx, lat=wy, cell_code=cell_code, division_code=division_code, method=method, reason=reason
    )

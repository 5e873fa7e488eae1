"""The one interface every municipal source implements: pages of raw rows since a cursor.

A page is the unit of work and of retry in the nightly sync: the flow validates a page, commits it
in one transaction together with ``cursor_after``, and after a crash resumes with
``fetch_page(entity, cursor=<stored cursor>, since=<same since>)``.

Semantics every implementation keeps:

* rows come in a stable order (the sandbox and the cities' APIs: by update time, then record id)
  and the cursor is a keyset position in that order, so a record updated while we page moves to
  the end and is seen again rather than skipped (the upsert is version-guarded, so seeing a record
  twice is harmless; missing it is not);
* ``since`` is inclusive (``updated_at >= since``): rows sharing the watermark's timestamp are
  fetched again instead of lost;
* ``records`` are the source's raw rows in the city's own field names; only
  :mod:`connectors.validate` turns them into canonical records;
* ``cursor_after`` is None on the last page.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from connectors.config import SourceRejected, SourceUnavailable

__all__ = ["Page", "Source", "SourceRejected", "SourceUnavailable"]


@dataclass(frozen=True)
class Page:
    """One page of raw rows from a source.

    ``cursor_before`` is the cursor this page was fetched with (None = from the start);
    ``cursor_after`` is the cursor to store once this page is committed (None = no more pages).
    ``total`` is the number of rows matching ``since`` when the source reports it.
    """

    entity: str
    records: list[dict[str, Any]]
    cursor_before: str | None
    cursor_after: str | None
    page_no: int
    fetched_at: datetime
    total: int | None = None

    def __repr__(self) -> str:  # rows are personal data: never in a repr
        return (
            f"Page(entity={self.entity!r}, page_no={self.page_no}, records=<{len(self.records)} rows>, "
            f"cursor_before={self.cursor_before!r}, cursor_after={self.cursor_after!r}, total={self.total})"
        )


@runtime_checkable
class Source(Protocol):
    """A municipal source of worker and enterprise rows."""

    name: str

    def pages(self, entity: str, *, since: str | None) -> Iterator[Page]:
        """All pages of ``entity`` updated at or after ``since`` (ISO 8601), first to last."""
        ...

    def fetch_page(self, entity: str, *, cursor: str | None, since: str | None) -> Page:
        """One page starting at ``cursor`` (None = first page)."""
        ...

"""Open the right :class:`connectors.source.Source` for a source config: HTTP API or file drop.

    with open_source(config) as source:
        page = source.fetch_page(entity, cursor=cursor, since=since, page_no=page_no)

Both implementations take ``page_no`` (it only numbers the page) and are closed on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from connectors.config import SourceConfig
from connectors.file import FileSource
from connectors.http import HttpSource

__all__ = ["AnySource", "open_source"]

#: What :func:`open_source` yields (both satisfy :class:`connectors.source.Source`).
AnySource = HttpSource | FileSource


@contextmanager
def open_source(config: SourceConfig, *, dry_run: bool = False) -> Iterator[AnySource]:
    """The source for ``config.kind``, closed on exit.

    ``dry_run`` is for reads that commit nothing (``gridflow sources check``): a file source then
    never writes its ledger.
    """
    source: AnySource
    if config.kind == "http":
        source = HttpSource(config)
    elif config.kind == "file":
        source = FileSource(config, commit_ledger=not dry_run)
    else:  # pragma: no cover - the config's Literal type rules it out
        raise ValueError(f"source {config.name} has an unknown kind {config.kind!r}")
    try:
        yield source
    finally:
        source.close()

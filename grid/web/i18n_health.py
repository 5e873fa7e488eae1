"""Interface strings of the health pages: (Simplified Chinese, English). Merged into grid.web.i18n."""

from __future__ import annotations

STRINGS: dict[str, tuple[str, str]] = {
    "sync_health": ("同步健康", "Sync health"),
}

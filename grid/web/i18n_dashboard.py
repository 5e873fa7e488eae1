"""Interface strings of the dashboard pages: (Simplified Chinese, English). Merged into grid.web.i18n."""

from __future__ import annotations

STRINGS: dict[str, tuple[str, str]] = {
    "dashboard": ("四个全监测", "Four-fulls dashboard"),
}

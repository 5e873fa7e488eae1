"""The dashboards' numbers as files for the monthly report: CSV (UTF-8 with BOM, for Excel) and XLSX.

One table per file, headers in the reader's language (Chinese by default, English with
``lang="en"``): the division itself, then each child, with every snapshot count, every rate and
the child's place in the on-time ranking. The XLSX adds the full ranking, the division's trend and
a notes sheet (snapshot date, as-of time, rate definitions). Counts only: no personal data.

A rate whose denominator is 0 is left blank (not 0): "no cases" is not "none handled".
In the CSV rates are percentages with two decimals; in the XLSX they are fractions formatted as
percentages, so sums and averages in Excel work on the real values.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date
from typing import Final

from geodata.codes import LEVEL_EN, LEVEL_ZH
from grid.monitoring.coverage import COUNT_FIELDS, RATE_BY_NAME, RATES, Counts
from grid.monitoring.dashboard_data import TREND_CHARTS, DivisionData, RankRow

COUNT_LABELS: Final[dict[str, tuple[str, str]]] = {
    "enterprises": ("企业数", "Enterprises"),
    "enterprises_union": ("已建会企业数", "Enterprises with a union"),
    "workers": ("职工数", "Workers"),
    "workers_mapped": ("已入格职工数", "Workers mapped to a cell"),
    "disputes": ("劳资纠纷数", "Disputes"),
    "disputes_resolved": ("已调解纠纷数", "Disputes resolved"),
    "disputes_on_time": ("按时调解纠纷数", "Disputes resolved on time"),
    "hardship": ("困难帮扶案件数", "Hardship cases"),
    "hardship_helped": ("已帮扶数", "Hardship cases helped"),
    "cases": ("案件总数", "Cases"),
    "responded_on_time": ("按时响应数", "Responded on time"),
    "resolved": ("已办结数", "Resolved"),
    "due": ("已到期数", "Cases due"),
    "resolved_on_time": ("按时办结数", "Resolved on time"),
    "overdue": ("超期未办结数", "Overdue"),
    "overdue_response": ("超期未响应数", "Overdue response"),
}
assert tuple(COUNT_LABELS) == COUNT_FIELDS

_WORDS: Final[dict[str, tuple[str, str]]] = {
    "row": ("行", "Row"),
    "self": ("本级", "This division"),
    "child": ("下级", "Child"),
    "code": ("单位代码", "Code"),
    "name": ("单位名称", "Name"),
    "level": ("层级", "Level"),
    "date": ("统计日期", "Snapshot date"),
    "rank": ("按时办结率排名", "On-time rank"),
    "status": ("说明", "Note"),
    "no_due": ("无到期案件", "no cases due"),
    "no_data": ("无数据", "no data"),
    "ranked": ("", ""),
    "summary": ("汇总", "Summary"),
    "ranking": ("排名", "Ranking"),
    "trend": ("趋势", "Trend"),
    "notes": ("说明", "Notes"),
}


def _w(key: str, lang: str) -> str:
    return _WORDS[key][1 if lang == "en" else 0]


def _pct_label(label: str, lang: str) -> str:
    return f"{label} (%)" if lang == "en" else f"{label}（%）"


def summary_headers(lang: str) -> list[str]:
    i = 1 if lang == "en" else 0
    return [
        _w("row", lang),
        _w("code", lang),
        _w("name", lang),
        _w("level", lang),
        _w("date", lang),
        *(COUNT_LABELS[c][i] for c in COUNT_FIELDS),
        *(_pct_label(m.label(lang), lang) for m in RATES),
        _w("rank", lang),
    ]


Value = str | int | float | date | None


def summary_rows(data: DivisionData, ranking: Sequence[RankRow], lang: str) -> list[list[Value]]:
    """The division, then its children; rates as fractions (None when undefined)."""
    position = {r.unit.code: r.position for r in ranking}
    day = data.run.snapshot_date if data.run else None

    def line(kind: str, code: str, name: str, level: int, c: Counts | None, rank: int | None) -> list[Value]:
        return [
            _w(kind, lang),
            code,
            name,
            (LEVEL_EN if lang == "en" else LEVEL_ZH)[level],
            day if c is not None else None,
            *((c.count(col) if c is not None else None) for col in COUNT_FIELDS),
            *((c.rate(m) if c is not None else None) for m in RATES),
            rank,
        ]

    d = data.division
    rows = [line("self", d.code, d.name, d.level, data.own, None)]
    rows += [
        line("child", ch.unit.code, ch.unit.name, ch.unit.level, ch.counts, position.get(ch.unit.code))
        for ch in data.children
    ]
    return rows


def spreadsheet_safe(v: str) -> str:
    """Neutralise text that a spreadsheet would run as a formula (CSV injection): every CSV and
    XLSX the project writes passes its text cells through here."""
    return "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v


_safe_text = spreadsheet_safe


_FIRST_RATE: Final = 5 + len(COUNT_FIELDS)
_RATE_COLUMNS: Final = range(_FIRST_RATE, _FIRST_RATE + len(RATES))


def to_csv(data: DivisionData, ranking: Sequence[RankRow], lang: str) -> bytes:
    """The summary table as CSV: UTF-8 with a BOM (Excel opens it as UTF-8), CRLF line ends."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(summary_headers(lang))
    for row in summary_rows(data, ranking, lang):
        out: list[str] = []
        for i, v in enumerate(row):
            if v is None:
                out.append("")
            elif i in _RATE_COLUMNS and isinstance(v, float):
                out.append(f"{v * 100:.2f}")
            elif isinstance(v, date):
                out.append(v.isoformat())
            elif isinstance(v, str):
                out.append(_safe_text(v))
            else:
                out.append(str(v))
        w.writerow(out)
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def ranking_headers(lang: str) -> list[str]:
    i = 1 if lang == "en" else 0
    on_time, response, resolution = (RATE_BY_NAME[k] for k in ("on_time", "response", "resolution"))
    return [
        _w("rank", lang),
        _w("code", lang),
        _w("name", lang),
        _pct_label(on_time.label(lang), lang),
        COUNT_LABELS["due"][i],
        COUNT_LABELS["resolved_on_time"][i],
        _pct_label(response.label(lang), lang),
        _pct_label(resolution.label(lang), lang),
        COUNT_LABELS["overdue"][i],
        COUNT_LABELS["overdue_response"][i],
        _w("status", lang),
    ]


def ranking_rows(ranking: Sequence[RankRow], lang: str) -> list[list[Value]]:
    out: list[list[Value]] = []
    for r in ranking:
        c = r.counts
        out.append(
            [
                r.position,
                r.unit.code,
                r.unit.name,
                r.rate("on_time"),
                c.due if c else None,
                c.resolved_on_time if c else None,
                r.rate("response"),
                r.rate("resolution"),
                c.overdue if c else None,
                c.overdue_response if c else None,
                _w(r.status, lang) or None,
            ]
        )
    return out


def to_xlsx(
    data: DivisionData,
    children_ranking: Sequence[RankRow],
    lang: str,
    *,
    ranking: Sequence[RankRow] | None = None,
) -> bytes:
    """A workbook: summary (as the CSV, ranks among the children), the ranking (of ``ranking``,
    e.g. every community of a city; default the children), the division's trend, notes."""
    if ranking is None:
        ranking = children_ranking
    from openpyxl import Workbook
    from openpyxl.styles import Font

    bold = Font(bold=True)
    wb = Workbook()
    ws = wb.active
    ws.title = _w("summary", lang)
    ws.append(summary_headers(lang))
    for row in summary_rows(data, children_ranking, lang):
        ws.append([_safe_text(v) if isinstance(v, str) else v for v in row])
    for col in _RATE_COLUMNS:
        for (cell,) in ws.iter_rows(min_row=2, min_col=col + 1, max_col=col + 1):
            cell.number_format = "0.0%"
    for (cell,) in ws.iter_rows(min_row=2, min_col=5, max_col=5):
        cell.number_format = "yyyy-mm-dd"

    rk = wb.create_sheet(_w("ranking", lang))
    rk.append(ranking_headers(lang))
    for row in ranking_rows(ranking, lang):
        rk.append([_safe_text(v) if isinstance(v, str) else v for v in row])
    for col in (4, 7, 8):
        for (cell,) in rk.iter_rows(min_row=2, min_col=col, max_col=col):
            cell.number_format = "0.0%"

    tr = wb.create_sheet(_w("trend", lang))
    keys = [k for chart in TREND_CHARTS for k in chart]
    tr.append([_w("date", lang), *(_pct_label(RATE_BY_NAME[k].label(lang), lang) for k in keys)])
    for day, c in data.trend:
        tr.append([day, *(c.rate(k) for k in keys)])
    for row in tr.iter_rows(min_row=2):
        row[0].number_format = "yyyy-mm-dd"
        for cell in row[1:]:
            cell.number_format = "0.0%"

    nt = wb.create_sheet(_w("notes", lang))
    en = lang == "en"
    d = data.division
    notes: list[list[Value]] = [
        [_w("code", lang), d.code],
        [_w("name", lang), _safe_text(d.name)],
        [_w("date", lang), data.run.snapshot_date if data.run else None],
        ["as of" if en else "数据截至", data.run.as_of.isoformat() if data.run else None],
        ["computed at" if en else "计算时间", data.run.computed_at.isoformat() if data.run else None],
        [],
    ]
    for m in RATES:
        num, den = COUNT_LABELS[m.numerator][1 if en else 0], COUNT_LABELS[m.denominator][1 if en else 0]
        notes.append([m.label(lang), f"{num} / {den}"])
    notes.append([])
    notes.append(
        [
            "blank rate" if en else "空白比率",
            "denominator is 0: the rate is undefined" if en else "分母为0，比率无定义（不等于0%）",
        ]
    )
    for n in notes:
        nt.append(n)
    for row in (ws[1], rk[1], tr[1]):
        for cell in row:
            cell.font = bold
    for sheet in (ws, rk, tr):
        sheet.freeze_panes = "A2"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()

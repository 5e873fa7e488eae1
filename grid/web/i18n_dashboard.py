"""Interface strings of the dashboard pages: (Simplified Chinese, English). Merged into grid.web.i18n.

Metric names come from :data:`grid.monitoring.coverage.RATES` (key ``m_<metric>``) and
count names from :data:`grid.monitoring.exports.COUNT_LABELS` (key ``n_<column>``), so the pages
and the exported files use the same words.
"""

from __future__ import annotations

from grid.monitoring.coverage import RATES
from grid.monitoring.exports import COUNT_LABELS

STRINGS: dict[str, tuple[str, str]] = {
    "dashboard": ("四个全监测", "Four-fulls dashboard"),
    "dash_four_fulls": ("四个全", "The four fulls"),
    "dash_supervision": ("督办", "Supervision"),
    "dash_snapshot": ("统计日期", "Snapshot date"),
    "dash_as_of": ("数据截至", "Data as of"),
    "dash_no_snapshot": (
        "尚无统计数据（覆盖率统计尚未运行）。",
        "No snapshot yet (the coverage report has not run).",
    ),
    "dash_no_row": ("该单位在此日期没有统计数据。", "This division has no numbers for this date."),
    "dash_no_data": ("无数据", "no data"),
    "dash_na": ("无分母（—）", "nothing to count (—)"),
    "dash_trend": ("趋势", "Trend"),
    "dash_days": ("近{n}天", "last {n} days"),
    "dash_children": ("下级单位", "Divisions below"),
    "dash_map": ("分布图", "Map"),
    "dash_map_metric": ("着色指标", "Colour by"),
    "dash_show": ("显示", "Show"),
    "dash_legend": ("图例", "Legend"),
    "dash_no_boundary": ("以下单位没有边界数据，未在图中显示：", "No boundary, not on the map: "),
    "dash_cells": ("网格分布", "Grid cells"),
    "dash_cells_note": (
        "社区内网格边界（不显示个人信息与指标）。",
        "Cell outlines in this community (no metrics).",
    ),
    "dash_no_cells": ("该社区没有网格边界数据。", "No cell boundaries in this community."),
    "dash_pending": ("另有 {n} 条待核实", "{n} more awaiting verification (quarantined, not counted)"),
    "dash_field_problems": ("其中 {n} 条字段待核实", "of them {n} with a field to verify"),
    "dash_def_registry": (
        "职工信息掌握率的分母为本单位已入库的全部职工（无论是否落入网格）：身份证号、姓名有效即入库，"
        "电话、坐标等字段有误时该字段留空并记为字段问题（计入分母）；无法定位的职工按地址归属，"
        "仍无归属的计入其来源城市。整条隔离（身份信息无效）的记录不计入比率，"
        "在比率旁显示为“另有 N 条待核实”。工会组织覆盖率对企业同理（统一社会信用代码、名称、是否建会有效即入库）。",
        "The denominator of workers mapped is every stored worker of the division, placed in a grid cell "
        "or not: a worker with a valid resident ID and name is stored, and a wrong phone or location only "
        "empties that field (a field problem, counted). A worker without a usable location counts where "
        "its address places it, else at its source's city. Records quarantined whole (invalid identity) "
        "are not in the rate; they show beside it as “N more awaiting verification”. Union coverage "
        "counts enterprises the same way (valid credit code, name and union flag).",
    ),
    "dash_generated": (
        "注意：该层级边界为生成数据，仅供演示，不得作为官方地理数据使用。",
        "Note: boundaries at this level are generated for demonstration, not official geography.",
    ),
    "dash_ranking": ("按时办结率排名", "On-time ranking"),
    "dash_rank": ("名次", "Rank"),
    "dash_rank_level": ("排名层级", "Units of level"),
    "dash_rank_rule": (
        "按按时办结率（按时办结数/已到期数）从高到低；相同时到期案件多者在前，再按代码。无到期案件的单位列在最后。",
        "By on-time rate (resolved on time / due), highest first; ties: more cases due first, then code. "
        "Units with no cases due are listed last.",
    ),
    "dash_no_due": ("无到期案件", "no cases due"),
    "dash_rank_total": ("共{n}个单位", "{n} units"),
    "dash_rank_rows": (
        "本页第{a}–{b}名（完整排名见Excel导出）",
        "rows {a}–{b} here (the full ranking is in the XLSX export)",
    ),
    "dash_export_csv": ("导出CSV", "Export CSV"),
    "dash_export_xlsx": ("导出Excel", "Export XLSX"),
    "dash_forbidden": ("网格员账号不能查看监测页面。", "Grid officer accounts cannot view the dashboards."),
    "dash_not_found": ("该单位不存在或不在您的辖区内。", "No such division in your area."),
    "dash_bad_level": ("排名层级须低于本单位层级。", "The ranking level must be below this division's."),
    "dash_code": ("代码", "Code"),
    "dash_name": ("名称", "Name"),
    "dash_rate": ("比率", "Rate"),
    "dash_count": ("数量", "Count"),
    "dash_up": ("上级", "Up"),
    "dash_no_children": ("没有下级单位。", "No divisions below."),
}

for _m in RATES:
    STRINGS[f"m_{_m.name}"] = (_m.label_zh, _m.label_en)
for _col, _pair in COUNT_LABELS.items():
    STRINGS[f"n_{_col}"] = _pair

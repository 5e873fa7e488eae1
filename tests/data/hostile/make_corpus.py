"""Rebuild the hostile-file corpus in this folder: ``python -m tests.data.hostile.make_corpus``.

Each file is damaged in one way the issue-17 review found (or a near relative). The files are
committed; this script documents how each was made and rebuilds them identically.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = "id,source_record_id,source_updated_at,id_number,name,lon,lat,crs"


def _id_number(i: int) -> str:
    from connectors.validate import _id_check_char

    body = f"42050219900101{i % 1000:03d}"
    return body + _id_check_char(body)


def _row(i: int) -> str:
    return f"r{i},r{i},2026-11-20T08:00:00+08:00,{_id_number(i)},测试{i},111.3{i % 10},30.7{i % 10},wgs84"


def _rows(n: int) -> list[str]:
    return [_row(i) for i in range(1, n + 1)]


def main() -> None:
    rows = _rows(50)
    long_field = "x" * 140_000
    unclosed = list(rows)
    unclosed[9] = unclosed[9].replace("测试10", '"测试10')  # a quote opened and never closed
    files: dict[str, str | bytes] = {
        "unclosed_quote.csv": "\n".join([HEADER, *unclosed]) + "\n",
        "field_over_limit.csv": "\n".join(
            [HEADER, *rows[:5], _row(6).replace("测试6", long_field), *rows[6:10]]
        )
        + "\n",
        "quoted_field_over_limit.csv": "\n".join(
            [HEADER, *rows[:3], _row(4).replace("测试4", f'"{long_field}"')]
        )
        + "\n",
        "ragged_rows.csv": "\n".join(
            [HEADER, *rows[:4], rows[4] + ",多余,再多", rows[5].rsplit(",", 3)[0], *rows[6:10]]
        )
        + "\n",
        "text_after_quote.csv": "\n".join(
            [HEADER, *rows[:3], rows[3].replace("测试4", '"测试"4'), *rows[4:8]]
        )
        + "\n",
        "formula_ids.csv": "\n".join(
            [
                HEADER,
                *rows[:3],
                _row(4).replace("r4,r4", '=HYPERLINK("http://x.example"),=HYPERLINK("http://x.example")'),
                _row(5).replace("r5,r5", "@SUM(A1),+r5"),
                _row(6).replace("r6,r6", "-2+3,-r6"),
            ]
        )
        + "\n",
        "nul_bytes.csv": "\n".join([HEADER, *rows[:3], '"' + rows[3] + '\x00"', *rows[4:6]]) + "\n",
        "header_only.csv": HEADER + "\n",
        "empty.csv": "",
        "not_text.csv": bytes(range(256)) * 8,
        "garbage.xlsx": b"PK\x03\x04" + bytes(range(200)) * 5,
        "bogus_crs.geojson": json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "EPSG:999999"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"code": "420502001001001", "name": "网格1"},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[111.3, 30.7], [111.31, 30.7], [111.31, 30.71], [111.3, 30.7]]],
                        },
                    }
                ],
            }
        ),
        "not_geojson.geojson": '{"type": "FeatureCollection", "features": [',
    }
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    for line in [HEADER, *rows[:30]]:
        ws.append(line.split(","))
    buf = io.BytesIO()
    wb.save(buf)
    whole = buf.getvalue()
    files["truncated.xlsx"] = whole[: len(whole) * 2 // 3]
    for name, content in files.items():
        path = HERE / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


if __name__ == "__main__":
    main()

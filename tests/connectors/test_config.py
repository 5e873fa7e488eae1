"""Source configuration files: the sample city loads, and every bad file is named with its problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.config import SourceConfig, SourceConfigError, load_all_sources, load_source_config
from connectors.records import CANONICAL_FIELDS

SOURCES = Path(__file__).parents[2] / "config" / "sources"


def test_yichang_config_loads() -> None:
    """Rule: the sample city is an http source in GCJ-02 mapping every canonical field."""
    cfg = load_source_config(SOURCES / "yichang.toml")
    assert (cfg.name, cfg.city_code, cfg.kind, cfg.crs) == ("yichang", "420500000000", "http", "gcj02")
    assert cfg.base_url == "http://127.0.0.1:8765"
    assert cfg.entities == ["enterprises", "workers", "grid_officers", "cases"]
    assert "schedule" not in SourceConfig.model_fields  # synced by the nightly deployment
    assert cfg.token_env == "GRIDFLOW_SOURCE_YICHANG_TOKEN"
    for entity in cfg.entities:
        required, optional = CANONICAL_FIELDS[entity]
        assert set(cfg.mapping[entity]) == set(required) | set(optional)
    assert cfg.mapping["workers"]["id_number"] == "sfzh"
    assert [c.name for c in load_all_sources(SOURCES)] == ["jingzhou", "xiangyang", "yichang"]


def test_bundled_province_cities_map_every_canonical_field() -> None:
    """Rule: 荆州 (4210…, offset paging, BD-09) and 襄阳 (a file drop) are onboarded by their
    source files alone, each mapping every canonical field in its own field names."""
    by = {c.name: c for c in load_all_sources(SOURCES)}
    jz, xy = by["jingzhou"], by["xiangyang"]
    assert (jz.city_code, jz.kind, jz.crs, jz.paging) == ("421000000000", "http", "bd09", "offset")
    assert (xy.city_code, xy.kind, xy.crs, xy.ready) == ("420600000000", "file", "wgs84", "manifest")
    for cfg in (jz, xy):
        for entity in cfg.entities:
            required, optional = CANONICAL_FIELDS[entity]
            assert set(cfg.mapping[entity]) == set(required) | set(optional), (cfg.name, entity)


def test_offset_overlap_must_be_smaller_than_a_page() -> None:
    """Rule: offset paging with an overlap of a whole page would never advance: refused at load."""
    base = load_source_config(SOURCES / "jingzhou.toml").model_dump()
    base.update(page_size=20, offset_overlap=20)
    with pytest.raises(ValueError, match="offset_overlap"):
        SourceConfig.model_validate(base)


GOOD = (SOURCES / "yichang.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(
            ("420500000000", "420502000000"), "city_code: must be a 12-digit city-level", id="county code"
        ),
        pytest.param(
            ('crs = "gcj02"', 'crs = "BJ54"'), "crs: unknown coordinate system 'BJ54'", id="unknown CRS"
        ),
        pytest.param(
            ("enabled = true", 'enabled = true\nschedule = "0 3 * * *"'),
            "schedule: not a per-source setting",
            id="per-city schedule that nothing would honour",
        ),
        pytest.param(
            ('id_number = "sfzh"', 'idnum = "sfzh"'), "mapping.workers lacks id_number", id="missing field"
        ),
        pytest.param(
            ('name = "xm"', 'name = "xm"\nnickname = "bm"'), "unknown canonical fields nickname", id="typo"
        ),
        pytest.param(('lat = "wd"', ""), "must name both lon and lat", id="half a point"),
        pytest.param(
            ("page_size = 500", "page_size = 0"), "page_size: Input should be greater than", id="page 0"
        ),
        pytest.param(
            ('kind = "http"', 'kind = "ftp"'), "kind: Input should be 'http' or 'file'", id="bad kind"
        ),
        pytest.param(('name = "yichang"', 'name = "wuhan"'), "must match the file name", id="name vs file"),
        pytest.param(
            ("enabled = true", "enabled = true\ntoken = 'x'"), "token: Extra inputs", id="secret in file"
        ),
        pytest.param(
            ('base_url = "http', 'base_url = "ftp'), "base_url: must be an http(s) URL", id="bad url"
        ),
        pytest.param(("[mapping.workers]", "[mapping.workers"), "not valid TOML", id="broken TOML"),
    ],
)
def test_bad_config_names_file_and_problem(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    """Rule: a bad source file fails at load with one line naming the file and the problem."""
    path = tmp_path / "yichang.toml"
    path.write_text(GOOD.replace(*edit, 1), encoding="utf-8")
    with pytest.raises(SourceConfigError) as exc:
        load_source_config(path)
    assert str(exc.value).startswith(str(path))
    assert message in str(exc.value)


def test_load_all_lists_every_bad_file(tmp_path: Path) -> None:
    """Rule: loading a directory reports every bad file at once, one per line."""
    (tmp_path / "yichang.toml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "a.toml").write_text("name = 'a'", encoding="utf-8")
    (tmp_path / "b.toml").write_text("= broken", encoding="utf-8")
    with pytest.raises(SourceConfigError) as exc:
        load_all_sources(tmp_path)
    lines = str(exc.value).splitlines()
    assert lines[0] == "invalid source configuration:"
    assert [line.split(":")[0] for line in lines[1:]] == [str(tmp_path / "a.toml"), str(tmp_path / "b.toml")]


def test_entities_are_put_in_load_order(tmp_path: Path) -> None:
    """Rule: enterprises load before workers, the roster before case reports, and case reports
    last, whatever order the file lists."""
    path = tmp_path / "yichang.toml"
    path.write_text(
        GOOD.replace(
            '["enterprises", "workers", "grid_officers", "cases"]',
            '["cases", "grid_officers", "workers", "enterprises"]',
        ),
        encoding="utf-8",
    )
    assert load_source_config(path).entities == ["enterprises", "workers", "grid_officers", "cases"]

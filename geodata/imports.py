"""Read grid cells and divisions from GeoJSON, GeoPackage or Shapefile, and say what is wrong.

Reading never raises for bad data: every problem is a :class:`Problem` row (feature index, the
feature's code as found, a reason from the closed list :class:`Reason`, a severity and one
sentence of detail). ``feature`` is the 0-based position of the feature in the layer, or None
for a problem of the whole file (unreadable, missing field, unknown CRS). A *blocking* problem
keeps the feature (or, file-level, the whole file) out; a *warning* is printed and the feature is
kept. ``gridflow cells import`` refuses to commit while any blocking problem remains.

Two steps, so that the database (or any other source of known divisions) stays outside:

1. :func:`read_layer` — the file: layer, field mapping, CRS, codes' shape, duplicates,
   geometry (missing, not a polygon, empty, invalid, outside China). Coordinates come out in
   WGS84 (CGCS2000 is taken as WGS84, see :mod:`geodata.crs`).
2. :func:`check_cells` / :func:`check_divisions` — the chain, against the divisions already
   known (:func:`needed_divisions` names the codes to look up): a cell's code is under its
   community (the mapped community field, when given, must equal the code's first 12 digits);
   its county is known; it lies inside its community's polygon — or, when the community is not
   loaded, the nearest loaded ancestor's — within :data:`DEFAULT_CHAIN_TOLERANCE_M`. A division's
   parent is one level up (a city-level code with no unit, like a municipality's 市辖区
   ``110100``, is skipped over) and the division lies inside the parent's polygon within the
   same tolerance.

Coordinate systems of the file (a CRS mismatch is an error, never a warning):

* the file says EPSG:4490 (CGCS2000) or EPSG:4326 / OGC:CRS84 (WGS84; a GeoJSON file always
  does, by RFC 7946): accepted as is;
* the caller declares ``gcj02`` or ``bd09`` (``--crs``) for a lon/lat file (or one with no CRS):
  converted to WGS84 with the exact inverses of :mod:`geodata.crs` — a file cannot say it is
  GCJ-02, so only the caller can;
* the caller declares ``wgs84``/``cgcs2000`` for a file with no CRS (a Shapefile without .prj):
  accepted;
* anything else — a projected CRS (metres), another datum, no CRS and none declared, or a name
  :func:`geodata.crs.parse_crs` does not know — is a file-level blocking problem. Nothing is
  reprojected or guessed.

Containment tolerance: a cell is inside its parent when every point of it lies within
``tolerance_m`` of the parent polygon, measured in metres on a projection centred on the parent
(:func:`geodata.diff.to_local_metres`). 5 m by default: two digitisations of one boundary by one
municipal system agree to well under that, and a cell drawn across a street into the next
community exceeds it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyogrio
import pyogrio.errors
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from geodata.codes import (
    Level,
    ancestor,
    division_level,
    is_cell_code,
    is_division_code,
    level_of,
    own_prefix,
    parent,
)
from geodata.crs import CHINA_BBOX, CRS, UnknownCRSError, parse_crs, to_wgs84
from geodata.diff import to_local_metres
from geodata.divisions import Division

__all__ = [
    "DEFAULT_CHAIN_TOLERANCE_M",
    "CellFeature",
    "CellImport",
    "DivisionImport",
    "Feature",
    "FieldMapping",
    "Layer",
    "Problem",
    "Reason",
    "Severity",
    "check_cells",
    "check_divisions",
    "common_scope",
    "needed_divisions",
    "read_cells",
    "read_divisions",
    "read_layer",
]

DEFAULT_CHAIN_TOLERANCE_M: Final = 5.0

ObjectArray = NDArray[np.object_]


class Severity(StrEnum):
    BLOCKING = "blocking"
    WARNING = "warning"


class Reason(StrEnum):
    """Why a feature (or the file) is not taken as it is. A closed list."""

    # the file (feature is None)
    UNREADABLE_FILE = "unreadable_file"
    NO_SUCH_LAYER = "no_such_layer"
    LAYER_REQUIRED = "layer_required"  # several layers and none named
    MISSING_FIELD = "missing_field"
    UNKNOWN_CRS = "unknown_crs"  # none in the file and none declared, or a name we do not know
    UNSUPPORTED_CRS = "unsupported_crs"  # projected or another datum: not lon/lat WGS84/CGCS2000
    EMPTY_LAYER = "empty_layer"
    # one feature
    BAD_CODE = "bad_code"  # not 15 digits (cells) / 12 digits (divisions), or missing
    DUPLICATE_CODE = "duplicate_code"
    OUTSIDE_SCOPE = "outside_scope"  # code not under the import's scope
    NOT_UNDER_PARENT = "not_under_parent"  # code not under the community/parent its field names
    PARENT_NOT_ONE_LEVEL_UP = "parent_not_one_level_up"
    ANCESTOR_NOT_LOADED = "ancestor_not_loaded"  # the cell's county is not a known division
    PARENT_NOT_LOADED = "parent_not_loaded"  # warning: checked against the nearest known ancestor
    MISSING_GEOMETRY = "missing_geometry"
    NOT_POLYGON = "not_polygon"
    EMPTY_GEOMETRY = "empty_geometry"
    INVALID_GEOMETRY = "invalid_geometry"
    OUTSIDE_CHINA = "outside_china"
    OUTSIDE_PARENT = "outside_parent"  # beyond the tolerance outside its community (or parent)
    MISSING_NAME = "missing_name"  # warning


WARNINGS: Final = frozenset({Reason.PARENT_NOT_LOADED, Reason.MISSING_NAME})


@dataclass(frozen=True)
class Problem:
    """One problem: ``feature`` is the 0-based position in the layer (None: the whole file)."""

    feature: int | None
    code: str | None
    reason: Reason
    detail: str

    @property
    def severity(self) -> Severity:
        return Severity.WARNING if self.reason in WARNINGS else Severity.BLOCKING

    @property
    def blocking(self) -> bool:
        return self.severity is Severity.BLOCKING


def _sorted(problems: Sequence[Problem]) -> tuple[Problem, ...]:
    return tuple(sorted(problems, key=lambda p: (-1 if p.feature is None else p.feature, p.reason.value)))


@dataclass(frozen=True)
class FieldMapping:
    """Which attribute holds the code, the name and the parent (a cell's community code, a
    division's parent code). ``name`` and ``parent`` may be None: names are then empty, parents
    read from the code."""

    code: str = "code"
    name: str | None = "name"
    parent: str | None = None


@dataclass(frozen=True)
class Feature:
    """A feature as read: the code normalised to text (None if absent), geometry in WGS84."""

    index: int
    code: str | None
    name: str
    parent: str | None
    geometry: BaseGeometry | None


@dataclass(frozen=True)
class Layer:
    """One layer of a file, read and converted to WGS84, with the file's and shape problems."""

    path: str
    layer: str | None
    file_crs: str | None
    crs: CRS | None  # the system the coordinates were in (None when the file was refused)
    features: tuple[Feature, ...]
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class CellFeature:
    """A grid cell accepted from a file (the shape the diff and the store take)."""

    code: str
    community_code: str
    name: str
    geometry: Polygon | MultiPolygon
    feature: int
    generated: bool = False


@dataclass(frozen=True)
class CellImport:
    layer: Layer
    problems: tuple[Problem, ...]  # all of them: file, shape and chain, sorted by feature
    cells: tuple[CellFeature, ...]  # features without a blocking problem

    @property
    def blocking(self) -> list[Problem]:
        return [p for p in self.problems if p.blocking]


@dataclass(frozen=True)
class DivisionImport:
    layer: Layer
    problems: tuple[Problem, ...]
    divisions: tuple[Division, ...]

    @property
    def blocking(self) -> list[Problem]:
        return [p for p in self.problems if p.blocking]


# --- the file -----------------------------------------------------------------------------------

_GEOGRAPHIC_AUTHORITIES: Final = {"EPSG:4326": CRS.WGS84, "OGC:CRS84": CRS.WGS84, "EPSG:4490": CRS.CGCS2000}


def _file_system(file_crs: str) -> CRS | None:
    """WGS84 or CGCS2000 if the file's CRS is one of them (lon/lat degrees), else None."""
    if file_crs.upper() in _GEOGRAPHIC_AUTHORITIES:
        return _GEOGRAPHIC_AUTHORITIES[file_crs.upper()]
    wkt = file_crs.upper()
    if not wkt.startswith(("GEOGCS[", "GEOGCRS[")):
        return None
    if "CHINA_GEODETIC_COORDINATE_SYSTEM_2000" in wkt.replace(" ", "_") or "CGCS2000" in wkt:
        return CRS.CGCS2000
    if "WGS_1984" in wkt.replace(" ", "_") or "WGS 84" in wkt:
        return CRS.WGS84
    return None


_GEOJSON_CRS = re.compile(r'"crs"\s*:\s*\{[^{}]*?"properties"\s*:\s*\{[^{}]*?"name"\s*:\s*"([^"]{1,500})"')


def _geojson_crs_name(source: str) -> str | None:
    """The name in a GeoJSON file's (pre-RFC 7946) top-level ``crs`` member, if it has one."""
    try:
        with open(source, "rb") as fh:
            head = fh.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return None
    start = head.find('"features"')
    m = _GEOJSON_CRS.search(head if start < 0 else head[:start]) or _GEOJSON_CRS.search(head)
    return m.group(1) if m else None


def _known_crs(name: str) -> bool:
    import pyproj

    try:
        pyproj.CRS.from_user_input(name)
    except pyproj.exceptions.CRSError:
        return False
    return True


def resolve_crs(file_crs: str | None, declared: str | CRS | None) -> CRS | Problem:
    """The system a file's coordinates are in, or the file-level problem (see the module rules)."""
    shown = file_crs if file_crs is None or len(file_crs) < 60 else file_crs[:57] + "..."
    system = None if file_crs is None else _file_system(file_crs)
    if file_crs is not None and system is None:
        return Problem(
            None,
            None,
            Reason.UNSUPPORTED_CRS,
            f"the file's CRS {shown} is not lon/lat WGS84 (EPSG:4326) or CGCS2000 (EPSG:4490); "
            "reproject it to EPSG:4490 first",
        )
    if declared is not None and declared != "":
        try:
            return declared if isinstance(declared, CRS) else parse_crs(declared)
        except UnknownCRSError as exc:
            return Problem(None, None, Reason.UNKNOWN_CRS, str(exc))
    if system is None:
        return Problem(
            None, None, Reason.UNKNOWN_CRS, "the file declares no CRS; say which with --crs (never guessed)"
        )
    return system


def _text(value: Any) -> str | None:
    """A code or name attribute as text: strings stripped, integral numbers without '.0'."""
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return None
        return str(int(value)) if float(value).is_integer() else str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = str(value).strip()
    return text or None


def _convert(geoms: ObjectArray, system: CRS) -> ObjectArray:
    """Geometries in WGS84 (2-D), from ``system``; all coordinates converted at once."""
    geoms = shapely.force_2d(geoms)
    if system in (CRS.WGS84, CRS.CGCS2000):
        return geoms
    present = np.flatnonzero(shapely.is_geometry(geoms))
    if present.size == 0:
        return geoms
    part = geoms[present]
    coords = shapely.get_coordinates(part)
    lon, lat = to_wgs84(coords[:, 0], coords[:, 1], system)
    out = geoms.copy()
    out[present] = shapely.set_coordinates(part.copy(), np.column_stack((lon, lat)))
    return out


def _list_layers(path: str) -> list[str]:
    return [str(name) for name, _ in pyogrio.list_layers(path)]


def read_layer(
    path: str | Path,
    *,
    layer: str | None = None,
    fields: FieldMapping = FieldMapping(),
    crs: str | CRS | None = None,
    code_digits: int = 15,
) -> Layer:
    """Read one layer: features in WGS84 plus the problems of the file and of each feature's shape.

    ``crs`` is the caller's declaration (see the module rules). ``code_digits`` is 15 for cells,
    12 for divisions. Never raises for the file's content.
    """
    source = str(path)
    problems: list[Problem] = []

    def refused(reason: Reason, detail: str, file_crs: str | None = None) -> Layer:
        return Layer(source, layer, file_crs, None, (), (Problem(None, None, reason, detail),))

    try:
        layers = _list_layers(source)
    except (pyogrio.errors.DataSourceError, OSError) as exc:
        return refused(Reason.UNREADABLE_FILE, f"cannot open {source}: {str(exc).splitlines()[0]}")
    if layer is None and len(layers) > 1:
        return refused(
            Reason.LAYER_REQUIRED, f"the file has {len(layers)} layers ({', '.join(layers)}); name one"
        )
    if layer is not None and layer not in layers:
        return refused(
            Reason.NO_SUCH_LAYER, f"no layer {layer!r}; the file has {', '.join(layers) or 'none'}"
        )
    chosen = layer if layer is not None else (layers[0] if layers else None)
    try:
        info = pyogrio.read_info(source, layer=chosen)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        return refused(Reason.UNREADABLE_FILE, f"cannot read {source}: {str(exc).splitlines()[0]}")
    file_crs = None if info.get("crs") is None else str(info["crs"])
    named = _geojson_crs_name(source) if info.get("driver") == "GeoJSON" else None
    if named is not None and not _known_crs(named):
        # GDAL reads a GeoJSON whose "crs" it does not know as WGS84 without a word: refuse it.
        shown = named if len(named) < 60 else named[:57] + "..."
        return refused(
            Reason.UNKNOWN_CRS,
            f"the file names the CRS {shown}, which is not a known coordinate system; "
            "reproject it to EPSG:4490 first",
            named,
        )
    available = [str(f) for f in info["fields"]]
    wanted = [f for f in (fields.code, fields.name, fields.parent) if f]
    missing = [f for f in wanted if f not in available]
    if missing:
        return refused(
            Reason.MISSING_FIELD,
            f"field(s) {', '.join(missing)} not in the layer; it has {', '.join(available) or 'none'}",
            file_crs,
        )
    system = resolve_crs(file_crs, crs)
    if isinstance(system, Problem):
        return Layer(source, chosen, file_crs, None, (), (system,))
    try:
        _meta, _fids, wkb, columns = pyogrio.raw.read(
            source, layer=chosen, columns=list(dict.fromkeys(wanted))
        )
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        return refused(Reason.UNREADABLE_FILE, f"cannot read {source}: {str(exc).splitlines()[0]}", file_crs)
    by_field = dict(zip(dict.fromkeys(wanted), columns, strict=True))
    n = len(wkb)
    if n == 0:
        return Layer(
            source, chosen, file_crs, system, (), (Problem(None, None, Reason.EMPTY_LAYER, "no features"),)
        )
    geoms = _convert(shapely.from_wkb(np.asarray(wkb, dtype=object), on_invalid="ignore"), system)
    codes = [_text(v) for v in by_field[fields.code]]
    names = [_text(v) for v in by_field[fields.name]] if fields.name else [None] * n
    parents = [_text(v) for v in by_field[fields.parent]] if fields.parent else [None] * n
    features = tuple(
        Feature(i, codes[i], names[i] or "", parents[i], geoms[i] if geoms[i] is not None else None)
        for i in range(n)
    )
    problems.extend(_code_problems(features, code_digits))
    problems.extend(_geometry_problems(features, geoms))
    if fields.name:
        problems.extend(
            Problem(f.index, f.code, Reason.MISSING_NAME, f"field {fields.name!r} is empty")
            for f in features
            if not f.name
        )
    return Layer(source, chosen, file_crs, system, features, _sorted(problems))


def _code_problems(features: Sequence[Feature], digits: int) -> list[Problem]:
    what = "cell" if digits == 15 else "division"
    check = is_cell_code if digits == 15 else is_division_code
    out: list[Problem] = []
    first: dict[str, int] = {}
    for f in features:
        if f.code is None:
            out.append(Problem(f.index, None, Reason.BAD_CODE, f"no {what} code"))
        elif not (f.code.isascii() and check(f.code)):
            out.append(Problem(f.index, f.code, Reason.BAD_CODE, f"a {what} code has {digits} ASCII digits"))
        elif f.code in first:
            out.append(
                Problem(f.index, f.code, Reason.DUPLICATE_CODE, f"the code of feature {first[f.code]} again")
            )
        else:
            first[f.code] = f.index
    return out


_POLYGONAL: Final = (shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON)


def _geometry_problems(features: Sequence[Feature], geoms: ObjectArray) -> list[Problem]:
    out: list[Problem] = []
    present = shapely.is_geometry(geoms)
    types = shapely.get_type_id(geoms)
    polygonal = present & np.isin(types, [int(t) for t in _POLYGONAL])
    empty = polygonal & shapely.is_empty(geoms)
    valid = np.zeros(len(geoms), dtype=bool)
    ok = polygonal & ~empty
    valid[ok] = shapely.is_valid(geoms[ok])
    bounds = np.full((len(geoms), 4), np.nan)
    bounds[ok] = shapely.bounds(geoms[ok])
    b = CHINA_BBOX
    with np.errstate(invalid="ignore"):
        in_china = (
            (bounds[:, 0] >= b.min_lon) & (bounds[:, 2] <= b.max_lon)
            & (bounds[:, 1] >= b.min_lat) & (bounds[:, 3] <= b.max_lat)
        )  # fmt: skip
    for f in features:
        i = f.index
        if not present[i]:
            out.append(Problem(i, f.code, Reason.MISSING_GEOMETRY, "no geometry (or unreadable)"))
        elif not polygonal[i]:
            out.append(
                Problem(i, f.code, Reason.NOT_POLYGON, f"a {geoms[i].geom_type}, not a (multi)polygon")
            )
        elif empty[i]:
            out.append(Problem(i, f.code, Reason.EMPTY_GEOMETRY, "empty polygon"))
        elif not valid[i]:
            out.append(Problem(i, f.code, Reason.INVALID_GEOMETRY, shapely.is_valid_reason(geoms[i])))
        elif not in_china[i]:
            x0, y0, x1, y1 = bounds[i]
            out.append(
                Problem(
                    i,
                    f.code,
                    Reason.OUTSIDE_CHINA,
                    f"extent {x0:.4f},{y0:.4f} - {x1:.4f},{y1:.4f} is not lon/lat inside China "
                    "(projected coordinates under a lon/lat CRS?)",
                )
            )
    return out


# --- the chain ----------------------------------------------------------------------------------

_CHAIN_FROM_COMMUNITY: Final = (Level.COMMUNITY, Level.TOWN, Level.COUNTY, Level.CITY, Level.PROVINCE)


def _good(layer: Layer, problems: Sequence[Problem]) -> list[Feature]:
    bad = {p.feature for p in problems if p.blocking}
    return [f for f in layer.features if f.index not in bad]


def needed_divisions(layer: Layer) -> set[str]:
    """Codes of every division the chain check of ``layer`` may look at (ancestors and parents)."""
    out: set[str] = set()
    for f in layer.features:
        code = f.code
        if code is None or not code.isascii() or not (is_cell_code(code) or is_division_code(code)):
            continue
        own = level_of(code)
        out.update(ancestor(code, lvl) for lvl in Level if lvl < own)
        if f.parent is not None and is_division_code(f.parent):
            out.add(f.parent)
    return out


def _outside(
    children: ObjectArray, parents: ObjectArray, tolerance_m: float
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """(child sticks out of its parent beyond the tolerance, area outside the parent in m²)."""
    lon0 = shapely.get_x(shapely.centroid(parents))
    child_m = to_local_metres(children, lon0)
    parent_m = to_local_metres(parents, lon0)
    zone = shapely.buffer(parent_m, tolerance_m) if tolerance_m > 0 else parent_m
    shapely.prepare(zone)
    out = ~shapely.covered_by(child_m, zone)
    area = np.zeros(len(children))
    if out.any():
        area[out] = shapely.area(shapely.difference(child_m[out], parent_m[out]))
    return out, area


def _containment_problems(
    items: Sequence[tuple[Feature, str, BaseGeometry]],
    what: str,
    known_names: Mapping[str, str],
    tolerance_m: float,
) -> list[Problem]:
    """OUTSIDE_PARENT for (feature, parent code, parent geometry) triples, checked at once."""
    if not items:
        return []
    children = np.empty(len(items), dtype=object)
    children[:] = [f.geometry for f, _, _ in items]
    parents = np.empty(len(items), dtype=object)
    parents[:] = [g for _, _, g in items]
    out, area = _outside(children, parents, tolerance_m)
    problems = []
    for k in np.flatnonzero(out):
        f, code, _ = items[int(k)]
        name = known_names.get(code, "")
        level = division_level(code).name.lower()
        problems.append(
            Problem(
                f.index,
                f.code,
                Reason.OUTSIDE_PARENT,
                f"{what} reaches beyond its {level} {code} {name}".rstrip()
                + f" by more than {tolerance_m:g} m ({area[k]:,.0f} m² outside)",
            )
        )
    return problems


def _polygon(d: Division | None) -> BaseGeometry | None:
    if d is None or d.geometry is None or d.geometry.is_empty or not d.geometry.is_valid:
        return None
    return d.geometry


def common_scope(codes: Sequence[str]) -> str | None:
    """The lowest division whose subtree holds every code (cell or division codes), or None.

    E.g. cells all in 西陵区 give ``420502000000``; cells of two counties give their city.
    """
    valid = [c for c in codes if c.isascii() and (is_cell_code(c) or is_division_code(c))]
    if not valid:
        return None
    scope: str | None = None
    for level in (Level.COMMUNITY, Level.TOWN, Level.COUNTY, Level.CITY, Level.PROVINCE):
        tops = set()
        for c in valid:
            own = level_of(c)
            tops.add(ancestor(c, level) if own >= level else None)
        if len(tops) == 1 and None not in tops:
            scope = tops.pop()
            break
    return scope


def check_cells(
    layer: Layer,
    divisions: Mapping[str, Division],
    *,
    tolerance_m: float = DEFAULT_CHAIN_TOLERANCE_M,
    scope: str | None = None,
) -> list[Problem]:
    """Chain problems of a cell layer against known ``divisions`` (by code; see the module rules).

    Only features without a blocking problem from :func:`read_layer` are checked. ``scope`` (a
    12-digit division code) restricts the codes allowed.
    """
    problems: list[Problem] = []
    prefix = own_prefix(scope) if scope else None
    names = {code: d.name for code, d in divisions.items()}
    inside: list[tuple[Feature, str, BaseGeometry]] = []
    for f in _good(layer, layer.problems):
        assert f.code is not None
        community = f.code[:12]
        if prefix is not None and not f.code.startswith(prefix):
            problems.append(Problem(f.index, f.code, Reason.OUTSIDE_SCOPE, f"not under the scope {scope}"))
            continue
        if f.parent is not None and f.parent != community:
            problems.append(
                Problem(
                    f.index,
                    f.code,
                    Reason.NOT_UNDER_PARENT,
                    f"the code is under community {community}, the community field says {f.parent}",
                )
            )
            continue
        county = ancestor(f.code, Level.COUNTY)
        if county not in divisions:
            problems.append(
                Problem(
                    f.index,
                    f.code,
                    Reason.ANCESTOR_NOT_LOADED,
                    f"its county {county} is not a known division",
                )
            )
            continue
        if community not in divisions:
            problems.append(
                Problem(
                    f.index,
                    f.code,
                    Reason.PARENT_NOT_LOADED,
                    f"community {community} is not loaded; checked against the nearest loaded ancestor",
                )
            )
        for level in _CHAIN_FROM_COMMUNITY:
            code = ancestor(f.code, level)
            geom = _polygon(divisions.get(code))
            if geom is not None:
                inside.append((f, code, geom))
                break
    problems.extend(_containment_problems(inside, "the cell", names, tolerance_m))
    return list(_sorted(problems))


def expected_parent(code: str, exists: Callable[[str], bool]) -> str | None:
    """The unit one level up — or, when that is a city-level code with no unit (a municipality's
    市辖区 ``110100``, a province's 省直辖 ``429000``), the province. Other levels are not skipped."""
    up = parent(code)
    if up is not None and division_level(up) is Level.CITY and not exists(up):
        return parent(up)
    return up


def check_divisions(
    layer: Layer, known: Mapping[str, Division], *, tolerance_m: float = DEFAULT_CHAIN_TOLERANCE_M
) -> list[Problem]:
    """Chain problems of a division layer: parent one level up, inside the parent's polygon.

    Parents may be in the file itself or in ``known``; the expected one is
    :func:`expected_parent`.
    """
    good = _good(layer, layer.problems)
    in_file = {f.code: f for f in good if f.code is not None}
    names = {**{c: d.name for c, d in known.items()}, **{c: f.name for c, f in in_file.items()}}
    problems: list[Problem] = []
    inside: list[tuple[Feature, str, BaseGeometry]] = []

    def exists(code: str) -> bool:
        return code in in_file or code in known

    for f in good:
        assert f.code is not None
        own = division_level(f.code)
        if own is Level.PROVINCE:
            continue
        expected = expected_parent(f.code, exists)
        given = f.parent
        if given is not None:
            if (
                not is_division_code(given)
                or division_level(given) >= own
                or ancestor(f.code, division_level(given)) != given
            ):
                problems.append(
                    Problem(
                        f.index,
                        f.code,
                        Reason.NOT_UNDER_PARENT,
                        f"the parent field {given} is not above the code",
                    )
                )
                continue
            if given != expected:
                problems.append(
                    Problem(
                        f.index,
                        f.code,
                        Reason.PARENT_NOT_ONE_LEVEL_UP,
                        f"parent {given} skips {expected}, which exists",
                    )
                )
                continue
        assert expected is not None
        if not exists(expected):
            problems.append(
                Problem(
                    f.index,
                    f.code,
                    Reason.PARENT_NOT_LOADED,
                    f"parent {expected} is not loaded nor in the file",
                )
            )
            continue
        parent_geom = in_file[expected].geometry if expected in in_file else _polygon(known.get(expected))
        if parent_geom is not None:
            inside.append((f, expected, parent_geom))
    problems.extend(_containment_problems(inside, "the division", names, tolerance_m))
    return list(_sorted(problems))


# --- the two entry points -----------------------------------------------------------------------


def _polygonal(geom: BaseGeometry) -> Polygon | MultiPolygon:
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    raise TypeError(f"expected a polygon, got {geom.geom_type}")  # pragma: no cover - read_layer checked


def read_cells(
    path: str | Path,
    divisions: Mapping[str, Division] | None = None,
    *,
    layer: str | None = None,
    fields: FieldMapping = FieldMapping(),
    crs: str | CRS | None = None,
    tolerance_m: float = DEFAULT_CHAIN_TOLERANCE_M,
    scope: str | None = None,
) -> CellImport:
    """Read and check a cell layer. ``divisions`` should hold at least :func:`needed_divisions`
    of the layer (read it with :func:`read_layer` first when they come from a database); without
    it only the file and the shapes are checked."""
    read = read_layer(path, layer=layer, fields=fields, crs=crs, code_digits=15)
    return cell_import(read, divisions, tolerance_m=tolerance_m, scope=scope)


def cell_import(
    layer: Layer,
    divisions: Mapping[str, Division] | None,
    *,
    tolerance_m: float = DEFAULT_CHAIN_TOLERANCE_M,
    scope: str | None = None,
) -> CellImport:
    """Check an already read cell layer against ``divisions`` and keep the good cells."""
    chain = (
        check_cells(layer, divisions, tolerance_m=tolerance_m, scope=scope) if divisions is not None else []
    )
    problems = _sorted([*layer.problems, *chain])
    bad = {p.feature for p in problems if p.blocking}
    cells = tuple(
        CellFeature(
            code=f.code,
            community_code=f.code[:12],
            name=f.name,
            geometry=_polygonal(f.geometry),
            feature=f.index,
        )
        for f in layer.features
        if f.index not in bad and f.code is not None and f.geometry is not None
    )
    return CellImport(layer, problems, cells)


def read_divisions(
    path: str | Path,
    known: Mapping[str, Division] | None = None,
    *,
    layer: str | None = None,
    fields: FieldMapping = FieldMapping(),
    crs: str | CRS | None = None,
    tolerance_m: float = DEFAULT_CHAIN_TOLERANCE_M,
) -> DivisionImport:
    """Read and check a division layer (12-digit codes); good features become :class:`Division`
    rows (``source`` = ``import:<file name>``, level read from the code)."""
    read = read_layer(path, layer=layer, fields=fields, crs=crs, code_digits=12)
    chain = check_divisions(read, known or {}, tolerance_m=tolerance_m)
    problems = _sorted([*read.problems, *chain])
    bad = {p.feature for p in problems if p.blocking}
    source = f"import:{Path(path).name}"
    in_file = {f.code for f in read.features if f.code is not None and f.index not in bad}
    known = known or {}
    divisions = []
    for f in read.features:
        if f.index in bad or f.code is None:
            continue
        up = f.parent
        if up is None:
            up = expected_parent(f.code, lambda c: c in in_file or c in known)
        divisions.append(
            Division(
                code=f.code,
                name=f.name,
                level=division_level(f.code),
                parent_code=up,
                geometry=f.geometry,
                generated=False,
                source=source,
            )
        )
    return DivisionImport(read, problems, tuple(divisions))

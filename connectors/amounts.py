"""The one parser of money amounts (yuan): case reports from sources, the CLI, the web form and the
JSON API all read an amount through :func:`parse_yuan`.

An amount is finite, not negative, has at most two decimals (fen) and is at most
:data:`MAX_YUAN`; blank is "no amount". Thousands separators, full-width digits and a trailing
``元`` are accepted. A JSON number is read through its shortest decimal text (``12500.5`` is
``12500.50``). Every refusal carries an English detail and a Chinese sentence for officers; neither
repeats the value.
"""

from __future__ import annotations

import math
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Any, Final

#: Largest amount accepted: one billion yuan (the columns hold up to 10^14; anything near that is
#: a typing or unit error, not a wage claim).
MAX_YUAN: Final = Decimal("1000000000.00")
_CENT: Final = Decimal("0.01")


class AmountError(ValueError):
    """An amount that is not one: ``detail`` in English, ``zh`` for the officer."""

    def __init__(self, detail: str, zh: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.zh = zh


def parse_yuan(value: Any) -> Decimal | None:
    """Yuan as a Decimal with two decimals, None if blank; raises :class:`AmountError` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise AmountError("amount must be a number, not a boolean", "金额必须是数字")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AmountError("amount is not a finite number", "金额必须是有限的数字")
        text = repr(value)
    elif isinstance(value, int | Decimal):
        text = str(value)
    elif isinstance(value, str):
        text = value if value.isascii() else unicodedata.normalize("NFKC", value)
        text = text.strip().removesuffix("元").replace(",", "").strip()
        if not text:
            return None
    else:
        raise AmountError(f"amount must be a number, not {type(value).__name__}", "金额必须是数字")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise AmountError("amount is not a number", "金额不是有效的数字") from None
    if not amount.is_finite():
        raise AmountError("amount is not a finite number", "金额必须是有限的数字")
    if amount < 0:
        raise AmountError("amount is negative", "金额不能为负数")
    if amount > MAX_YUAN:
        raise AmountError(f"amount is over {MAX_YUAN:,.0f} yuan", "金额超过上限（10亿元）")
    quantized = amount.quantize(_CENT)
    if quantized != amount:
        raise AmountError("amount has more than two decimals", "金额最多保留两位小数（分）")
    return quantized

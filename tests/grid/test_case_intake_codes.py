"""Case intake accepts exactly the credit codes the connectors accept (GB 32100 shape + check)."""

from __future__ import annotations

import pytest
from stdnum.cn import uscc

from connectors.kinds import CaseKind
from grid.cases.intake import CaseReport, IntakeError


def _code(body17: str) -> str:
    return body17 + uscc.calc_check_digit(body17)


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        pytest.param(_code("91420500MA4KX0001"), True, id="company-code-accepted"),
        pytest.param(_code("N2420500MA4KX0001"), True, id="agricultural-authority-letter-accepted"),
        pytest.param(_code("91420500MA4KX0001")[:17] + "0", False, id="wrong-check-character-refused"),
        pytest.param("91420500MA4KX00I1X", False, id="letter-I-outside-the-alphabet-refused"),
    ],
)
def test_intake_credit_codes_match_the_connector_rule(code: str, ok: bool) -> None:
    """Rule: a code valid at the edge is valid at intake, so a sync page never fails on it."""
    make = lambda: CaseReport(  # noqa: E731
        kind=CaseKind.WAGE_ARREARS, channel="sync", division_code="420502000000", enterprise_uscc=code
    )
    if ok:
        assert make().enterprise_uscc == code
    else:
        with pytest.raises(IntakeError):
            make()

"""A case's own words are sealed: the description, amount claimed and address in one AES-GCM blob,
and the address shown masked (``grid.cases.details``, ``grid.people.mask_address``)."""

from __future__ import annotations

import os
from decimal import Decimal

import psycopg2.extensions
import pytest
from cryptography.exceptions import InvalidTag

from grid.cases.details import CASE_DETAILS, MAX_DESCRIPTION, CaseDetails, masked_address, seal, unseal
from grid.cases.intake import open_case
from grid.people import Vault, mask_address
from tests.grid.test_case_store import RULES, T0, make_world, report, worker

VAULT = Vault(hmac_key=os.urandom(32), enc_key=os.urandom(32))


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        pytest.param(
            "湖北省宜昌市西陵区夷陵大道88号3单元", "湖北省宜昌市西陵区****", id="house-number-hidden"
        ),
        pytest.param("西陵区学院街道东山社区12栋", "西陵区学院街道东山社区****", id="community-kept"),
        pytest.param("长阳土家族自治县龙舟坪镇", "长阳土家族自治县龙舟坪镇****", id="county-and-town-kept"),
        pytest.param("夷陵大道88号", "夷陵****", id="no-place-name-keeps-two-characters"),
        pytest.param("宜昌市12区3号", "宜昌市****", id="a-digit-ends-what-is-kept"),
        pytest.param("88号", "****", id="digits-only-nothing-kept"),
        pytest.param("  宜昌市伍家岗区  ", "宜昌市伍家岗区****", id="trimmed"),
    ],
)
def test_mask_address_keeps_leading_place_names_and_never_a_digit(address: str, masked: str) -> None:
    got = mask_address(address)
    assert got == masked
    assert not any(ch.isdigit() for ch in got)


def test_sealed_details_round_trip_and_need_the_key_and_purpose() -> None:
    details = CaseDetails("拖欠工资三个月，联系电话13900001111", Decimal("12345.50"), "宜昌市西陵区某路1号")
    blob = seal(VAULT, details)
    assert blob is not None
    assert b"13900001111" not in blob and "拖欠".encode() not in blob
    assert unseal(blob, VAULT) == details
    other = Vault(hmac_key=os.urandom(32), enc_key=os.urandom(32))
    with pytest.raises(InvalidTag):
        unseal(blob, other)
    with pytest.raises(InvalidTag):  # a worker's blob purpose does not open it, nor the reverse
        VAULT.decrypt(blob, purpose="worker-pii")
    assert VAULT.decrypt(blob, purpose=CASE_DETAILS)
    assert "13900001111" not in repr(details)


def test_nothing_to_seal_is_none_and_a_long_description_is_cut_not_refused() -> None:
    assert seal(VAULT, CaseDetails(" ", None, "\x00")) is None
    assert masked_address(CaseDetails(None, None, None)) is None
    long = "欠" * (MAX_DESCRIPTION + 50)
    blob = seal(VAULT, CaseDetails(long, None, None))
    assert blob is not None
    assert unseal(blob, VAULT).description == long[:MAX_DESCRIPTION]


@pytest.mark.db
def test_a_repeat_report_seals_its_words_onto_a_case_opened_without_any_and_never_replaces_them(
    conn: psycopg2.extensions.connection,
) -> None:
    """Rule: an attached report is never silently dropped: a case that has no sealed details takes
    the repeat report's; a case that has them keeps the first report's."""
    world = make_world(conn)
    who = worker()
    first = open_case(conn, report=report(world, worker_hmac=who), rules=RULES, actor="t", at=T0)
    words = CaseDetails("第二次反映：仍未发放工资", Decimal("3000"), "宜昌市西陵区某路2号")
    again = open_case(
        conn,
        report=report(
            world, worker_hmac=who, details_enc=seal(VAULT, words), address_masked=masked_address(words)
        ),
        rules=RULES,
        actor="t",
        at=T0,
    )
    assert again.attached and again.case_id == first.case_id
    other = CaseDetails("第三次反映", None, None)
    open_case(
        conn,
        report=report(world, worker_hmac=who, details_enc=seal(VAULT, other)),
        rules=RULES,
        actor="t",
        at=T0,
    )
    with conn.cursor() as cur:
        cur.execute("SELECT details_enc, address_masked FROM case_file WHERE id = %s", (first.case_id,))
        blob, masked = cur.fetchone()  # type: ignore[misc]
    conn.rollback()
    assert unseal(bytes(blob), VAULT) == words and masked == "宜昌市西陵区****"

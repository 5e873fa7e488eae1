"""Personal-information protection: keyed HMAC, encryption at rest, masking."""

from __future__ import annotations

import hashlib
import hmac
import pickle
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grid.people import Vault, mask_id, mask_name, mask_phone


@pytest.fixture
def vault() -> Vault:
    return Vault(hmac_key=secrets.token_bytes(32), enc_key=secrets.token_bytes(32))


def test_hmac_is_keyed_and_purpose_separated(vault: Vault) -> None:
    """Matching uses a keyed HMAC: another key gives another value, and an ID never matches a phone."""
    other = Vault(hmac_key=secrets.token_bytes(32), enc_key=secrets.token_bytes(32))
    assert vault.mac("11010519491231002X", purpose="id") == vault.mac("11010519491231002X", purpose="id")
    assert vault.mac("11010519491231002X", purpose="id") != other.mac("11010519491231002X", purpose="id")
    assert vault.mac("13812345678", purpose="id") != vault.mac("13812345678", purpose="phone")


@given(key=st.binary(min_size=32, max_size=32), message=st.text(max_size=300))
@settings(max_examples=300)
def test_mac_is_standard_hmac_sha256(key: bytes, message: str) -> None:
    """The precomputed-pad MAC is exactly RFC 2104 HMAC-SHA256 of "purpose\\x1fvalue" (stored
    HMACs stay valid and match other systems'), and survives pickling (Dask workers)."""
    v = Vault(hmac_key=key, enc_key=bytes(32))
    expected = hmac.digest(key, f"id\x1f{message}".encode(), "sha256")
    assert v.mac(message, purpose="id") == expected
    assert pickle.loads(pickle.dumps(v)).mac(message, purpose="id") == expected
    row = hashlib.blake2b(message.encode(), key=key, digest_size=32, person=b"gridflow-row").digest()
    assert v.fingerprint(message.encode()) == row


def test_encryption_round_trips_and_hides_plaintext(vault: Vault) -> None:
    """Ciphertext is randomised, carries no plaintext, and decrypts only for its purpose."""
    a = vault.encrypt("11010519491231002X", purpose="id")
    b = vault.encrypt("11010519491231002X", purpose="id")
    assert a != b
    assert b"11010519491231002X" not in a
    assert vault.decrypt(a, purpose="id") == "11010519491231002X"
    with pytest.raises(Exception):  # noqa: B017 - AES-GCM raises InvalidTag for a wrong associated purpose
        vault.decrypt(a, purpose="phone")


@pytest.mark.parametrize(
    ("fn", "value", "masked"),
    [
        pytest.param(mask_id, "42050219850312123X", "420***********123X", id="id-18-keeps-3-and-4"),
        pytest.param(mask_id, "420502850312123", "420********2123", id="legacy-id-15"),
        pytest.param(mask_phone, "13812345678", "138****5678", id="mobile"),
        pytest.param(mask_name, "张三", "张*", id="two-char-name"),
        pytest.param(mask_name, "王小明", "王*明", id="three-char-name"),
        pytest.param(mask_name, "欧阳娜娜", "欧**娜", id="four-char-name"),
    ],
)
def test_masks_follow_minimum_necessary(fn, value: str, masked: str) -> None:  # type: ignore[no-untyped-def]
    """Officers see masked ID and phone by default (420***********123X, 138****5678)."""
    assert fn(value) == masked

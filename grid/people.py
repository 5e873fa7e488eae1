"""Personal information: keyed HMAC for matching, AES-256-GCM at rest, masking for display.

An unkeyed hash of an ID number is reversible by brute force (about 10^11 candidates), so
matching across systems uses HMAC-SHA256 with a secret key. Ciphertexts are
``version byte || 12-byte nonce || AES-GCM(ciphertext+tag)``; the version byte leaves room for
key rotation.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CIPHERTEXT_VERSION = b"\x01"


@dataclass(frozen=True)
class Vault:
    """Keys for one deployment; build with :func:`vault_from_settings`."""

    hmac_key: bytes
    enc_key: bytes
    _aead: AESGCM = field(init=False, repr=False, compare=False)

    _inner: Any = field(init=False, repr=False, compare=False)
    _outer: Any = field(init=False, repr=False, compare=False)
    _row: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.hmac_key) != 32 or len(self.enc_key) != 32:
            raise ValueError("HMAC and encryption keys must be 32 bytes")
        self._derive()

    def _derive(self) -> None:
        # HMAC-SHA256 (RFC 2104) with the padded key's two hash states computed once: a MAC is
        # then two hash-object copies. OpenSSL 3's one-shot HMAC fetches the digest on every call
        # and contends on a lock when threads call it (measured 1.5 µs alone, 2.6 µs per call
        # with two threads, against 0.65 µs here).
        padded = self.hmac_key.ljust(64, b"\0")
        object.__setattr__(self, "_inner", hashlib.sha256(bytes(k ^ 0x36 for k in padded)))
        object.__setattr__(self, "_outer", hashlib.sha256(bytes(k ^ 0x5C for k in padded)))
        row = hashlib.blake2b(key=self.hmac_key, digest_size=32, person=b"gridflow-row")
        object.__setattr__(self, "_row", row)
        object.__setattr__(self, "_aead", AESGCM(self.enc_key))

    def __getstate__(self) -> dict[str, bytes]:  # derived state is rebuilt, not pickled
        return {"hmac_key": self.hmac_key, "enc_key": self.enc_key}

    def __setstate__(self, state: dict[str, bytes]) -> None:
        object.__setattr__(self, "hmac_key", state["hmac_key"])
        object.__setattr__(self, "enc_key", state["enc_key"])
        self._derive()

    @property
    def aead(self) -> AESGCM:
        """The AES-256-GCM cipher, for hot paths that inline :meth:`encrypt` (same format)."""
        return self._aead

    def mac(self, value: str, *, purpose: str) -> bytes:
        """Keyed HMAC-SHA256 of ``value``; ``purpose`` separates domains (an ID never matches a phone)."""
        return self.mac_bytes(f"{purpose}\x1f{value}".encode())

    def mac_bytes(self, message: bytes) -> bytes:
        """HMAC-SHA256 of raw bytes under the deployment key (``mac`` adds the purpose prefix)."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        mac: bytes = outer.digest()
        return mac

    def fingerprint(self, value: bytes) -> bytes:
        """Keyed BLAKE2b of a record's content: detects change without revealing it."""
        h = self._row.copy()
        h.update(value)
        digest: bytes = h.digest()
        return digest

    def encrypt(self, value: str, *, purpose: str) -> bytes:
        nonce = os.urandom(12)
        return CIPHERTEXT_VERSION + nonce + self._aead.encrypt(nonce, value.encode(), purpose.encode())

    def decrypt(self, blob: bytes, *, purpose: str) -> str:
        if blob[:1] != CIPHERTEXT_VERSION:
            raise ValueError("unknown ciphertext version")
        return self._aead.decrypt(blob[1:13], blob[13:], purpose.encode()).decode()


def vault_from_settings() -> Vault:
    from grid.settings import get_settings

    s = get_settings()
    return Vault(hmac_key=s.key_bytes("hmac"), enc_key=s.key_bytes("encryption"))


def mask_id(id_number: str) -> str:
    """``420***********123X``: first three and last four characters kept."""
    if len(id_number) <= 7:
        return "*" * len(id_number)
    return id_number[:3] + "*" * (len(id_number) - 7) + id_number[-4:]


def mask_phone(phone: str) -> str:
    """``138****5678`` for mobiles; other numbers keep their first three and last four."""
    if len(phone) <= 7:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def mask_name(name: str) -> str:
    """``张*`` / ``张*三`` / ``欧阳**``: surname kept, given name hidden except a long name's last char."""
    if len(name) <= 1:
        return "*"
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


# Place names an address starts with (province … community); what follows (road, building, house
# number) is masked.
_PLACE = re.compile(r"省|自治区|特别行政区|市|自治州|地区|盟|区|县|旗|镇|乡|街道|村|社区|居委会")
_MASK_ADDRESS_SCAN = 24


def mask_address(address: str) -> str:
    """``湖北省宜昌市西陵区****``: the leading place names kept (never a digit), the rest hidden."""
    text = address.strip()
    head = text[:_MASK_ADDRESS_SCAN]
    digit = next((i for i, ch in enumerate(head) if ch.isdigit()), len(head))
    keep = 0
    for m in _PLACE.finditer(head[:digit]):
        keep = m.end()
    if keep == 0:
        keep = min(2, len(text) // 3, digit)
    return text[:keep] + "****"

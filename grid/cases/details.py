"""A case's own words, sealed: the description, the amount claimed and the address.

A case report's free-text description may name people, illnesses or phone numbers, and the amount
claimed is financial information: both are personal data (PIPL Art. 28). They are kept together
with the address in one AES-256-GCM blob (``case_file.details_enc``, vault purpose
``case-details``), opened only by an audited reveal (``grid.web.casework.reveal``). The address is
also kept masked (:func:`grid.people.mask_address`) for display. Nothing here is ever logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

import orjson

from grid.people import Vault, mask_address

CASE_DETAILS: Final = "case-details"
#: Longest description kept (characters); a longer one is cut, never refused.
MAX_DESCRIPTION: Final = 4000


@dataclass(frozen=True, slots=True)
class CaseDetails:
    """The sealed fields of one case (``repr`` shows none of them)."""

    description: str | None = field(default=None, repr=False)
    amount: Decimal | None = field(default=None, repr=False)
    address: str | None = field(default=None, repr=False)


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.replace("\x00", "").strip()
    return text or None


def seal(vault: Vault, details: CaseDetails) -> bytes | None:
    """The encrypted blob for ``case_file.details_enc``, or None when the report gave none."""
    description = _clean(details.description)
    address = _clean(details.address)
    if description is None and details.amount is None and address is None:
        return None
    amount = None if details.amount is None else str(details.amount)
    plain = orjson.dumps([(description or "")[:MAX_DESCRIPTION] or None, amount, address]).decode()
    return vault.encrypt(plain, purpose=CASE_DETAILS)


def unseal(blob: bytes, vault: Vault) -> CaseDetails:
    """The fields of a blob from :func:`seal` (for an audited reveal only)."""
    description, amount, address = orjson.loads(vault.decrypt(blob, purpose=CASE_DETAILS))
    return CaseDetails(description, None if amount is None else Decimal(amount), address)


def masked_address(details: CaseDetails) -> str | None:
    """The address as a case page may show it without a reveal."""
    address = _clean(details.address)
    return None if address is None else mask_address(address)

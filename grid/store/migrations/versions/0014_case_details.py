"""A case's own words, kept sealed: description, amount claimed and address, encrypted.

The sync used to drop a case report's free-text description (it may name people, illnesses or
phone numbers). ``case_file.details_enc`` now keeps the description, the amount claimed and the
address together in one AES-256-GCM blob (vault purpose ``case-details``, see
``grid.cases.details``); ``address_masked`` is the address cut to the places it names (no house
number), for display. The plaintext ``amount`` column stays: routing thresholds read it and no page
shows it. ``enterprise_name`` is the employer's registered name, copied from ``enterprise`` at
intake (the web role may not read ``enterprise``; a company name is no personal data).
``reveal_audit.field`` gains the three case fields a reveal may now open.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_FIELDS_OLD = "'worker_id', 'worker_phone', 'worker_name'"
_FIELDS_NEW = _FIELDS_OLD + ", 'case_description', 'case_amount', 'case_address'"


def upgrade() -> None:
    op.execute(
        f"""
        ALTER TABLE case_file
            ADD COLUMN details_enc bytea,
            ADD COLUMN address_masked text CHECK (length(address_masked) <= 200),
            ADD COLUMN enterprise_name text;
        UPDATE case_file c SET enterprise_name = (
            SELECT e.name FROM enterprise e WHERE e.uscc = c.enterprise_uscc ORDER BY e.updated_at DESC LIMIT 1)
        WHERE c.enterprise_uscc IS NOT NULL;
        ALTER TABLE reveal_audit DROP CONSTRAINT IF EXISTS reveal_audit_field_check;
        ALTER TABLE reveal_audit ADD CONSTRAINT reveal_audit_field_check CHECK (field IN ({_FIELDS_NEW}));
        """
    )


def downgrade() -> None:
    # reveal_audit keeps its wider check: an audit row is never deleted to fit an older schema.
    op.execute(
        """
        ALTER TABLE case_file DROP COLUMN enterprise_name, DROP COLUMN address_masked, DROP COLUMN details_enc;
        """
    )

"""A cheaper worker row to store: a hash index on ``id_hmac`` and code checks without regexes.

A first night COPYs every worker row, and the database's share per record (``bench_sync``) was
mostly index insertion and the row's checks. Measured on a million rows COPYed as the sync writes
them (13.2 -> 11.0 µs of backend CPU a row):

- ``worker.id_hmac`` is only ever looked up by equality (case intake, the case page, the
  reveal, the row-level policy through ``case_file``), and a keyed HMAC is random: a B-tree
  insert descends to a random leaf and binary-searches 32-byte keys on every level; a hash
  index inserts into one bucket page. Same lookups, ~1.4 µs a row less.
- ``cell_code ~ '^[0-9]{15}$'`` and ``division_code ~ '^[0-9]{12}$'`` ran the regex engine
  twice a row. The same rule without it: the code (as text, trailing blanks of ``char(n)``
  dropped) is exactly 15 (12) bytes and nothing is left after stripping the ASCII digits.
  ``tests/grid/test_worker_checks.py`` proves both forms accept and refuse the same codes.
- ``worker.id`` is drawn from its sequence 1,000 at a time per session (``CACHE 1000``) instead
  of one locked, periodically WAL-logged ``nextval`` a row (~0.4 µs). Ids stay unique and
  increasing within a session; a session that ends leaves a gap, as a rolled-back insert always
  did. Nothing reads meaning into a worker's id.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def _digits(column: str, n: int) -> str:
    return f"octet_length({column}::text) = {n} AND ltrim({column}::text, '0123456789') = ''"


def upgrade() -> None:
    op.execute(
        f"""
        DROP INDEX worker_id_hmac;
        CREATE INDEX worker_id_hmac ON worker USING hash (id_hmac);
        ALTER SEQUENCE worker_id_seq CACHE 1000;
        ALTER TABLE worker
            DROP CONSTRAINT worker_cell_code_check,
            DROP CONSTRAINT worker_division_code_check,
            ADD CONSTRAINT worker_cell_code_check CHECK ({_digits("cell_code", 15)}),
            ADD CONSTRAINT worker_division_code_check CHECK ({_digits("division_code", 12)});
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX worker_id_hmac;
        CREATE INDEX worker_id_hmac ON worker (id_hmac);
        ALTER SEQUENCE worker_id_seq CACHE 1;
        ALTER TABLE worker
            DROP CONSTRAINT worker_cell_code_check,
            DROP CONSTRAINT worker_division_code_check,
            ADD CONSTRAINT worker_cell_code_check CHECK (cell_code ~ '^[0-9]{15}$'),
            ADD CONSTRAINT worker_division_code_check CHECK (division_code ~ '^[0-9]{12}$');
        """
    )

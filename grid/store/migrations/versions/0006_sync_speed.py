"""Nightly sync speed: fewer checks per upserted worker row.

Measured on this 2-core machine (COPY + version-guarded upsert of 48,500 worker rows), the two
foreign keys from ``worker`` to ``sync_run`` cost about 12 µs per row (two RI trigger lookups
each) and the two secondary indexes on ``cell_code`` / ``division_code`` about 9 µs — about as
much as the rest of the upsert. No query reads workers by cell or division through an index (the
coverage report aggregates the whole table), and the run ids are bookkeeping written only by
``grid.sync.store.write_page`` inside the run that owns them (``sync_run`` rows are never
deleted). Enterprises (a fifteenth of the rows) keep theirs.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
ALTER TABLE worker DROP CONSTRAINT IF EXISTS worker_first_run_id_fkey;
ALTER TABLE worker DROP CONSTRAINT IF EXISTS worker_last_run_id_fkey;
DROP INDEX IF EXISTS worker_cell;
DROP INDEX IF EXISTS worker_division;
"""
    )


def downgrade() -> None:
    op.execute(
        """
CREATE INDEX IF NOT EXISTS worker_cell ON worker (cell_code);
CREATE INDEX IF NOT EXISTS worker_division ON worker (division_code);
ALTER TABLE worker ADD CONSTRAINT worker_first_run_id_fkey FOREIGN KEY (first_run_id) REFERENCES sync_run (id);
ALTER TABLE worker ADD CONSTRAINT worker_last_run_id_fkey FOREIGN KEY (last_run_id) REFERENCES sync_run (id);
"""
    )

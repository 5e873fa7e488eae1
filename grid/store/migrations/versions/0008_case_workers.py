"""Workers counted on a case, so an attached report adds only workers not counted yet.

``case_worker`` holds the keyed HMAC (never the ID number) of each worker an attached report
identified. The case's own first worker stays in ``case_file.worker_hmac``. The collective re-check
(``grid.cases.collective``) counts a report's named worker once, however many reports name them.
The web role gets no access: only intake (the sync and the CLI, as the owner) writes or reads it.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
CREATE TABLE case_worker (
    case_id     bigint      NOT NULL REFERENCES case_file (id),
    worker_hmac bytea       NOT NULL CHECK (length(worker_hmac) = 32),
    added_at    timestamptz NOT NULL,
    PRIMARY KEY (case_id, worker_hmac)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON case_worker TO gridflow_flows;
"""
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS case_worker;")

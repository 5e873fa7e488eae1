"""Coverage snapshots: the four fulls, supervision rates and overdue counts per division per day.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
-- One row per computed day: when it was computed, as of which instant, by which flow run.
CREATE TABLE coverage_run (
    snapshot_date date        PRIMARY KEY,
    as_of         timestamptz NOT NULL,
    computed_at   timestamptz NOT NULL DEFAULT now(),
    flow_run_id   uuid,
    divisions     integer     NOT NULL DEFAULT 0
);

-- Counts, never rates: a rate is numerator / denominator, NULL when the denominator is 0.
-- Every division at every level (valid_to IS NULL) gets a row, counting its whole subtree.
CREATE TABLE coverage_snapshot (
    snapshot_date      date     NOT NULL REFERENCES coverage_run (snapshot_date) ON DELETE CASCADE,
    division_code      char(12) NOT NULL,
    level              smallint NOT NULL CHECK (level BETWEEN 1 AND 5),
    parent_code        char(12),
    -- 工会组织全覆盖: live enterprises, and those with a union established
    enterprises        integer  NOT NULL DEFAULT 0,
    enterprises_union  integer  NOT NULL DEFAULT 0,
    -- 职工信息全掌握: live worker records, and those placed in a grid cell
    workers            integer  NOT NULL DEFAULT 0,
    workers_mapped     integer  NOT NULL DEFAULT 0,
    -- 劳资矛盾全调解: disputes opened this calendar year, resolved, resolved on time
    disputes           integer  NOT NULL DEFAULT 0,
    disputes_resolved  integer  NOT NULL DEFAULT 0,
    disputes_on_time   integer  NOT NULL DEFAULT 0,
    -- 困难职工全帮扶: hardship cases opened this calendar year, with assistance delivered
    hardship           integer  NOT NULL DEFAULT 0,
    hardship_helped    integer  NOT NULL DEFAULT 0,
    -- supervision (all case families, opened this calendar year)
    cases              integer  NOT NULL DEFAULT 0,
    responded_on_time  integer  NOT NULL DEFAULT 0,
    resolved           integer  NOT NULL DEFAULT 0,
    due                integer  NOT NULL DEFAULT 0,
    resolved_on_time   integer  NOT NULL DEFAULT 0,
    -- open cases of any year past their deadlines at as_of
    overdue            integer  NOT NULL DEFAULT 0,
    overdue_response   integer  NOT NULL DEFAULT 0,
    PRIMARY KEY (snapshot_date, division_code)
);
CREATE INDEX coverage_snapshot_parent ON coverage_snapshot (parent_code, snapshot_date);
CREATE INDEX coverage_snapshot_division ON coverage_snapshot (division_code, snapshot_date DESC);

GRANT SELECT ON coverage_run, coverage_snapshot TO gridflow_app;
"""
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS coverage_snapshot, coverage_run")

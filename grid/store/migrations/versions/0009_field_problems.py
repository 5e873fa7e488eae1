"""Field problems: a record loaded with one field empty keeps that field's problem here.

* ``field_problem``: one open row per (source, entity, record id, field) whose rule failed while
  the record itself was loaded (``connectors.problems``): the reason code (the same closed list as
  quarantine), the canonical field, a safe detail (never the value), the raw value encrypted with
  the vault's ``raw`` purpose, the runs that first and last saw it, ``created_at`` and
  ``settled_at`` / ``resolution`` (``fixed``: a newer version of the record carries a valid value,
  written by a nightly sync or by reprocessing), and reprocessing bookkeeping as in quarantine.
* The web role reads it under row-level security by the source's ``city_code``, as quarantine.
* ``coverage_note``: per snapshot date and division, the records beside the registry rates —
  quarantined whole (not counted: "另有 N 条待核实") and counted with a field problem
  (``grid/monitoring/pending.py``). Counts only; the web role may SELECT it.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
CREATE TABLE field_problem (
    id               bigserial   PRIMARY KEY,
    source           text        NOT NULL REFERENCES source (name),
    entity           text        NOT NULL CHECK (entity IN ('workers', 'enterprises')),
    source_record_id text        NOT NULL,
    field            text        NOT NULL,
    reason_code      text        NOT NULL,
    detail           text        NOT NULL DEFAULT '',
    raw_enc          bytea       NOT NULL,
    run_id           bigint      NOT NULL REFERENCES sync_run (id),
    last_run_id      bigint      NOT NULL REFERENCES sync_run (id),
    seen_count       integer     NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    settled_at       timestamptz,
    resolution       text        CHECK (resolution = 'fixed'),
    reprocessed_at   timestamptz,
    reprocess_count  integer     NOT NULL DEFAULT 0,
    CHECK ((settled_at IS NULL) = (resolution IS NULL))
);
CREATE UNIQUE INDEX field_problem_open_once ON field_problem (source, entity, source_record_id, field)
    WHERE settled_at IS NULL;
CREATE INDEX field_problem_source_reason ON field_problem (source, reason_code) WHERE settled_at IS NULL;

ALTER TABLE field_problem ENABLE ROW LEVEL SECURITY;
CREATE POLICY field_problem_via_source ON field_problem FOR SELECT TO gridflow_app
    USING (EXISTS (SELECT 1 FROM source s WHERE s.name = field_problem.source
                   AND gridflow_chain_visible(s.city_code)));
GRANT SELECT ON field_problem TO gridflow_app;

CREATE TABLE coverage_note (
    snapshot_date              date     NOT NULL REFERENCES coverage_run (snapshot_date) ON DELETE CASCADE,
    division_code              char(12) NOT NULL,
    workers_pending            integer  NOT NULL DEFAULT 0,
    enterprises_pending        integer  NOT NULL DEFAULT 0,
    workers_field_problems     integer  NOT NULL DEFAULT 0,
    enterprises_field_problems integer  NOT NULL DEFAULT 0,
    PRIMARY KEY (snapshot_date, division_code)
);
ALTER TABLE coverage_note ENABLE ROW LEVEL SECURITY;
CREATE POLICY coverage_note_scope ON coverage_note FOR SELECT TO gridflow_app
    USING (gridflow_chain_visible(division_code));
GRANT SELECT ON coverage_note TO gridflow_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON field_problem, coverage_note TO gridflow_flows;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO gridflow_flows;
"""
    )


def downgrade() -> None:
    op.execute(
        """
DROP POLICY IF EXISTS coverage_note_scope ON coverage_note;
DROP TABLE IF EXISTS coverage_note;
DROP POLICY IF EXISTS field_problem_via_source ON field_problem;
REVOKE ALL ON field_problem FROM gridflow_app;
DROP TABLE IF EXISTS field_problem;
"""
    )

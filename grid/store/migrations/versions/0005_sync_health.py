"""Sync health: quarantine reprocessing and alert bookkeeping.

* ``sync_run.mode`` may be ``reprocess`` (a run of the quarantine reprocess flow: it writes through
  the same page path, so its rows need a run id; freshness and volume checks ignore it).
* ``quarantine.reprocessed_at`` / ``reprocess_count``: when a row was last re-taken and how often.
* ``reprocess_request``: one row per reprocessing asked for on the web or the CLI — the quarantine
  row ids (never personal data), who asked, the Prefect flow run started, and its outcome.
* The web role reads ``quarantine`` (to show masked drill-downs) under row-level security by the
  source's city, and records ``reprocess_request`` rows.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
ALTER TABLE sync_run DROP CONSTRAINT IF EXISTS sync_run_mode_check;
ALTER TABLE sync_run ADD CONSTRAINT sync_run_mode_check
    CHECK (mode IN ('incremental', 'full', 'reprocess'));
CREATE INDEX sync_run_source_finished ON sync_run (source, finished_at DESC)
    WHERE status = 'completed' AND mode <> 'reprocess';

ALTER TABLE quarantine ADD COLUMN reprocessed_at timestamptz,
                       ADD COLUMN reprocess_count integer NOT NULL DEFAULT 0;
CREATE INDEX quarantine_source_created ON quarantine (source, created_at);
CREATE INDEX quarantine_source_record ON quarantine (source, entity, source_record_id)
    WHERE resolved_at IS NULL;

CREATE TABLE reprocess_request (
    id             bigserial   PRIMARY KEY,
    source         text        NOT NULL REFERENCES source (name),
    quarantine_ids bigint[]    NOT NULL CHECK (cardinality(quarantine_ids) BETWEEN 1 AND 1000),
    requested_by   text        NOT NULL,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    flow_run_id    uuid,
    status         text        NOT NULL DEFAULT 'requested'
                   CHECK (status IN ('requested', 'running', 'completed', 'failed')),
    result         jsonb       NOT NULL DEFAULT '{}'::jsonb,   -- counts by outcome, never values
    finished_at    timestamptz
);
CREATE INDEX reprocess_request_source ON reprocess_request (source, id DESC);

-- The web role sees quarantine rows of sources in its scope only (the service query filters the
-- same way; this is the backstop). Scope is the code prefix set by grid.accounts.access.apply_scope.
ALTER TABLE quarantine ENABLE ROW LEVEL SECURITY;
CREATE POLICY quarantine_via_source ON quarantine FOR SELECT TO gridflow_app
    USING (EXISTS (SELECT 1 FROM source s WHERE s.name = quarantine.source
                   AND gridflow_chain_visible(s.city_code)));
ALTER TABLE reprocess_request ENABLE ROW LEVEL SECURITY;
CREATE POLICY reprocess_request_via_source ON reprocess_request TO gridflow_app
    USING (EXISTS (SELECT 1 FROM source s WHERE s.name = reprocess_request.source
                   AND gridflow_chain_visible(s.city_code)))
    WITH CHECK (EXISTS (SELECT 1 FROM source s WHERE s.name = reprocess_request.source
                   AND gridflow_chain_visible(s.city_code)));

GRANT SELECT ON quarantine TO gridflow_app;
GRANT SELECT, INSERT, UPDATE ON reprocess_request TO gridflow_app;
GRANT USAGE ON SEQUENCE reprocess_request_id_seq TO gridflow_app;
"""
    )


def downgrade() -> None:
    op.execute(
        """
DROP POLICY IF EXISTS quarantine_via_source ON quarantine;
ALTER TABLE quarantine DISABLE ROW LEVEL SECURITY;
REVOKE ALL ON quarantine FROM gridflow_app;
DROP TABLE IF EXISTS reprocess_request;
DROP INDEX IF EXISTS quarantine_source_record;
DROP INDEX IF EXISTS quarantine_source_created;
ALTER TABLE quarantine DROP COLUMN IF EXISTS reprocess_count, DROP COLUMN IF EXISTS reprocessed_at;
DROP INDEX IF EXISTS sync_run_source_finished;
DELETE FROM sync_run WHERE mode = 'reprocess'
    AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.run_id = sync_run.id OR q.last_run_id = sync_run.id)
    AND NOT EXISTS (SELECT 1 FROM worker w WHERE w.first_run_id = sync_run.id OR w.last_run_id = sync_run.id)
    AND NOT EXISTS (SELECT 1 FROM enterprise e WHERE e.first_run_id = sync_run.id OR e.last_run_id = sync_run.id);
UPDATE sync_run SET mode = 'incremental' WHERE mode = 'reprocess';
ALTER TABLE sync_run DROP CONSTRAINT IF EXISTS sync_run_mode_check;
ALTER TABLE sync_run ADD CONSTRAINT sync_run_mode_check CHECK (mode IN ('incremental', 'full'));
"""
    )

"""Accounts, sessions, login throttling, reveal audit, and row-level security for the web app.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21

The web app works as the role ``gridflow_app`` (NOLOGIN, neither owner nor superuser; the web
connects with ``options='-c role=gridflow_app'`` so even ``RESET ROLE`` lands on it). Each of its
transactions states its scope with ``set_config('gridflow.scope', <code prefix>, true)`` or
``set_config('gridflow.cells', '<cell>,<cell>', true)``; both are transaction-local, so a pooled
connection reverts to "nothing visible" at commit — the policies fail closed.

``case_event`` is written with COPY, which PostgreSQL refuses on a table with row-level security,
so it gets no policy: the app role may only INSERT into it (a trigger refuses an event for a case
the transaction cannot see) and reads it through the view ``case_event_scoped``.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        r"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gridflow_app') THEN
        CREATE ROLE gridflow_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END $$;
GRANT gridflow_app TO CURRENT_USER;

CREATE TABLE app_user (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    login         text        NOT NULL UNIQUE CHECK (login ~ '^[a-z0-9][a-z0-9_.-]{2,63}$'),
    password_hash text        NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    role          text        NOT NULL CHECK (role IN ('grid_officer', 'community', 'town', 'county', 'city',
                                  'province', 'admin')),
    scope_code    text        NOT NULL CHECK (scope_code ~ '^[0-9]{12}$'),
    active        boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- A grid officer's cells (the officer's scope; scope_code is then the community).
CREATE TABLE user_cell (
    user_id    bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    cell_code  text   NOT NULL CHECK (cell_code ~ '^[0-9]{15}$'),
    PRIMARY KEY (user_id, cell_code)
);

-- Server-side sessions: the cookie carries a random token, the table its SHA-256.
CREATE TABLE web_session (
    token_hash    bytea       PRIMARY KEY,
    user_id       bigint      NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    csrf_token    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX web_session_user ON web_session (user_id);

-- Login attempts for throttling, by a keyed hash of the login (no plain login names of strangers).
CREATE TABLE login_attempt (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    login_key  bytea       NOT NULL,
    client     text        NOT NULL,
    success    boolean     NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_attempt_key_at ON login_attempt (login_key, at);
CREATE INDEX login_attempt_client_at ON login_attempt (client, at);

-- Every reveal of a masked field: who, which case, which field, why, when.
CREATE TABLE reveal_audit (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id   bigint      NOT NULL REFERENCES app_user (id),
    login     text        NOT NULL,
    case_id   bigint      NOT NULL REFERENCES case_file (id),
    field     text        NOT NULL CHECK (field IN ('worker_id', 'worker_phone', 'worker_name')),
    reason    text        NOT NULL CHECK (length(btrim(reason)) >= 4),
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reveal_audit_case ON reveal_audit (case_id);

-- For the worker policy and the case page's worker lookup on closed cases too.
CREATE INDEX case_file_worker_hmac ON case_file (worker_hmac) WHERE worker_hmac IS NOT NULL;
CREATE INDEX case_file_chain_deadline ON case_file (chain_code text_pattern_ops, resolve_by);

-- The one visibility rule: a chain code is visible if it starts with the transaction's scope
-- prefix (2-12 digits), or is one of its cells. Unset or empty settings: nothing is visible.
CREATE FUNCTION gridflow_chain_visible(chain text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN coalesce(current_setting('gridflow.scope', true), '') ~ '^[0-9]{2,12}$'
            THEN left(chain, length(current_setting('gridflow.scope', true)))
                 = current_setting('gridflow.scope', true)
        WHEN coalesce(current_setting('gridflow.cells', true), '') ~ '^[0-9]{15}(,[0-9]{15})*$'
            THEN chain = ANY (string_to_array(current_setting('gridflow.cells', true), ','))
        ELSE false
    END
$$;

ALTER TABLE case_file ENABLE ROW LEVEL SECURITY;
CREATE POLICY case_file_scope ON case_file TO gridflow_app
    USING (gridflow_chain_visible(chain_code)) WITH CHECK (gridflow_chain_visible(chain_code));

ALTER TABLE worker ENABLE ROW LEVEL SECURITY;
CREATE POLICY worker_via_case ON worker FOR SELECT TO gridflow_app
    USING (EXISTS (SELECT 1 FROM case_file c WHERE c.worker_hmac = worker.id_hmac));

ALTER TABLE reveal_audit ENABLE ROW LEVEL SECURITY;
CREATE POLICY reveal_audit_via_case ON reveal_audit TO gridflow_app
    USING (EXISTS (SELECT 1 FROM case_file c WHERE c.id = reveal_audit.case_id))
    WITH CHECK (EXISTS (SELECT 1 FROM case_file c WHERE c.id = reveal_audit.case_id));

CREATE VIEW case_event_scoped WITH (security_barrier) AS
    SELECT e.* FROM case_event e
    WHERE EXISTS (SELECT 1 FROM case_file c WHERE c.id = e.case_id AND gridflow_chain_visible(c.chain_code));

CREATE FUNCTION case_event_scope_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF row_security_active('case_file') AND NOT EXISTS (SELECT 1 FROM case_file WHERE id = NEW.case_id) THEN
        RAISE EXCEPTION 'case % is outside the scope of this transaction', NEW.case_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER case_event_scope BEFORE INSERT ON case_event
    FOR EACH ROW EXECUTE FUNCTION case_event_scope_check();

GRANT SELECT, UPDATE ON case_file TO gridflow_app;
GRANT INSERT ON case_event TO gridflow_app;
GRANT SELECT ON case_event_scoped, supervision_ledger TO gridflow_app;
GRANT SELECT, INSERT, UPDATE ON escalation_step, notification_outbox TO gridflow_app;
GRANT SELECT ON worker, unit, grid_officer, division, grid_cell, cell_version, source, sync_run TO gridflow_app;
GRANT SELECT ON app_user, user_cell TO gridflow_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON web_session TO gridflow_app;
GRANT SELECT, INSERT, DELETE ON login_attempt TO gridflow_app;
GRANT SELECT, INSERT ON reveal_audit TO gridflow_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO gridflow_app;
"""
    )


def downgrade() -> None:
    op.execute(
        """
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM gridflow_app;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM gridflow_app;
DROP TRIGGER IF EXISTS case_event_scope ON case_event;
DROP FUNCTION IF EXISTS case_event_scope_check();
DROP VIEW IF EXISTS case_event_scoped;
DROP POLICY IF EXISTS reveal_audit_via_case ON reveal_audit;
DROP POLICY IF EXISTS worker_via_case ON worker;
DROP POLICY IF EXISTS case_file_scope ON case_file;
ALTER TABLE worker DISABLE ROW LEVEL SECURITY;
ALTER TABLE case_file DISABLE ROW LEVEL SECURITY;
DROP FUNCTION IF EXISTS gridflow_chain_visible(text);
DROP INDEX IF EXISTS case_file_worker_hmac, case_file_chain_deadline;
DROP TABLE IF EXISTS reveal_audit, login_attempt, web_session, user_cell, app_user;
"""
    )

"""Least privilege: database login roles by job, and row-level security on every scoped or secret table.

Roles (names in ``grid.settings``):

* the owner (the migrating user, ``gridflow`` on the private cluster) owns every object and runs
  migrations and the CLI's administrative commands;
* ``gridflow_web`` — the web app's login: NOINHERIT, not superuser, owns nothing, member of
  ``gridflow_app`` only (which bypasses nothing). It connects with ``-c role=gridflow_app``; after
  ``RESET ROLE`` / ``SET ROLE NONE`` it is back to a role with no privileges at all, and it may not
  ``SET ROLE`` to the owner or ``SET SESSION AUTHORIZATION`` to anyone;
* ``gridflow_flows`` — the flows' login: DML on the tables the flows write, nothing on accounts,
  SELECT/DELETE on sessions and login attempts (the sweep purges them), no DDL, owns nothing.
  It has BYPASSRLS: the flows work across every scope, and they COPY into tables that have
  row-level security (PostgreSQL refuses COPY FROM under RLS). The web cannot reach it.

The roles are created here when missing and the migrating user may (superuser; CREATEROLE is
enough for the web role); otherwise the migration stops and names what an operator must create
(README "Database roles"). Passwords are set after every migration run by
``grid.store.roles.sync_service_passwords``.

Row-level security for ``gridflow_app`` (visibility rule ``gridflow_chain_visible`` of 0003, or a
transaction-local setting the web states for one login, session or client; unset = nothing):
``app_user`` (by ``gridflow.login`` or a visible session), ``user_cell`` (via app_user),
``web_session`` (by ``gridflow.session``, the token hash in hex), ``login_attempt`` (by
``gridflow.login_key`` or ``gridflow.client``), ``notification_outbox`` and ``escalation_step``
(via case_file), ``coverage_snapshot`` (by division), ``source`` (a scope sees the sources of its
city: ``gridflow_city_visible``), ``sync_run`` (via source), ``grid_officer`` (by cell). The view
``supervision_ledger`` filters by the same rule for a role under RLS. The classification of every
table is ``grid.store.privacy.TABLES`` (a test fails on a table nobody classified).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ROLES = r"""
DO $$
DECLARE
    is_super boolean;
    may_create boolean;
BEGIN
    SELECT rolsuper, rolsuper OR rolcreaterole INTO is_super, may_create
        FROM pg_roles WHERE rolname = current_user;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gridflow_web') THEN
        IF NOT may_create THEN
            RAISE EXCEPTION 'database role gridflow_web is missing and % may not create roles: '
                'create it as README "Database roles" says, then migrate again', current_user;
        END IF;
        CREATE ROLE gridflow_web LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
            NOREPLICATION;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gridflow_flows') THEN
        IF NOT is_super THEN
            RAISE EXCEPTION 'database role gridflow_flows is missing and % may not create a BYPASSRLS '
                'role: create it as README "Database roles" says, then migrate again', current_user;
        END IF;
        CREATE ROLE gridflow_flows LOGIN NOINHERIT NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE
            NOREPLICATION;
    END IF;
END $$;
GRANT gridflow_app TO gridflow_web;
"""

_FLOWS_GRANTS = """
GRANT SELECT, INSERT, UPDATE, DELETE ON
    division, cell_version, grid_cell, source, source_cursor, sync_run, enterprise, worker, full_seen,
    quarantine, unit, grid_officer, case_file, case_event, escalation_step, case_intake,
    notification_outbox, reveal_audit, coverage_run, coverage_snapshot, reprocess_request
    TO gridflow_flows;
GRANT SELECT, DELETE ON web_session, login_attempt TO gridflow_flows;
GRANT SELECT ON spatial_ref_sys, case_event_scoped, supervision_ledger TO gridflow_flows;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO gridflow_flows;
"""

_RLS = r"""
-- A transaction-local hex setting as bytes (NULL when unset: matches nothing).
CREATE FUNCTION gridflow_setting_bytes(name text) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT decode(nullif(current_setting(name, true), ''), 'hex')
$$;

-- Sources are city-level: a scope sees the sources of its city (a county its city's), a province
-- those of its cities. Officers (cell scopes) see none.
CREATE FUNCTION gridflow_city_visible(city text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(current_setting('gridflow.scope', true), '') ~ '^[0-9]{2,12}$'
       AND left(city, least(4, length(current_setting('gridflow.scope', true))))
           = left(current_setting('gridflow.scope', true), 4)
$$;

ALTER TABLE web_session ENABLE ROW LEVEL SECURITY;
CREATE POLICY web_session_by_token ON web_session TO gridflow_app
    USING (token_hash = gridflow_setting_bytes('gridflow.session'))
    WITH CHECK (token_hash = gridflow_setting_bytes('gridflow.session'));

ALTER TABLE app_user ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_user_named_or_signed_in ON app_user FOR SELECT TO gridflow_app
    USING (login = nullif(current_setting('gridflow.login', true), '')
           OR EXISTS (SELECT 1 FROM web_session s WHERE s.user_id = app_user.id));

ALTER TABLE user_cell ENABLE ROW LEVEL SECURITY;
CREATE POLICY user_cell_via_user ON user_cell FOR SELECT TO gridflow_app
    USING (EXISTS (SELECT 1 FROM app_user u WHERE u.id = user_cell.user_id));

ALTER TABLE login_attempt ENABLE ROW LEVEL SECURITY;
CREATE POLICY login_attempt_by_key_or_client ON login_attempt TO gridflow_app
    USING (login_key = gridflow_setting_bytes('gridflow.login_key')
           OR client = nullif(current_setting('gridflow.client', true), ''))
    WITH CHECK (login_key = gridflow_setting_bytes('gridflow.login_key')
           AND client = nullif(current_setting('gridflow.client', true), ''));
REVOKE DELETE ON web_session, login_attempt FROM gridflow_app;

ALTER TABLE notification_outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY notification_outbox_via_case ON notification_outbox TO gridflow_app
    USING (EXISTS (SELECT 1 FROM case_file c WHERE c.id = notification_outbox.case_id))
    WITH CHECK (EXISTS (SELECT 1 FROM case_file c WHERE c.id = notification_outbox.case_id));

ALTER TABLE escalation_step ENABLE ROW LEVEL SECURITY;
CREATE POLICY escalation_step_via_case ON escalation_step TO gridflow_app
    USING (EXISTS (SELECT 1 FROM case_file c WHERE c.id = escalation_step.case_id))
    WITH CHECK (EXISTS (SELECT 1 FROM case_file c WHERE c.id = escalation_step.case_id));

ALTER TABLE coverage_snapshot ENABLE ROW LEVEL SECURITY;
CREATE POLICY coverage_snapshot_scope ON coverage_snapshot FOR SELECT TO gridflow_app
    USING (gridflow_chain_visible(division_code));

ALTER TABLE source ENABLE ROW LEVEL SECURITY;
CREATE POLICY source_city ON source FOR SELECT TO gridflow_app USING (gridflow_city_visible(city_code));

ALTER TABLE sync_run ENABLE ROW LEVEL SECURITY;
CREATE POLICY sync_run_via_source ON sync_run FOR SELECT TO gridflow_app
    USING (EXISTS (SELECT 1 FROM source s WHERE s.name = sync_run.source));

ALTER TABLE grid_officer ENABLE ROW LEVEL SECURITY;
CREATE POLICY grid_officer_scope ON grid_officer FOR SELECT TO gridflow_app
    USING (gridflow_chain_visible(cell_code));

-- The ledger reads case_event (no RLS) as the view's owner: filter it for a role under RLS.
ALTER VIEW supervision_ledger RENAME TO supervision_ledger_all;
REVOKE ALL ON supervision_ledger_all FROM gridflow_app;
CREATE VIEW supervision_ledger WITH (security_barrier) AS
    SELECT * FROM supervision_ledger_all
    WHERE NOT row_security_active('case_file') OR gridflow_chain_visible(unit_code);
GRANT SELECT ON supervision_ledger TO gridflow_app;
"""


def upgrade() -> None:
    op.execute(_ROLES)
    op.execute(_RLS)
    op.execute(_FLOWS_GRANTS)


def downgrade() -> None:
    op.execute(
        """
DROP VIEW IF EXISTS supervision_ledger;
ALTER VIEW supervision_ledger_all RENAME TO supervision_ledger;
GRANT SELECT ON supervision_ledger TO gridflow_app;
DROP POLICY IF EXISTS grid_officer_scope ON grid_officer;
DROP POLICY IF EXISTS sync_run_via_source ON sync_run;
DROP POLICY IF EXISTS source_city ON source;
DROP POLICY IF EXISTS coverage_snapshot_scope ON coverage_snapshot;
DROP POLICY IF EXISTS escalation_step_via_case ON escalation_step;
DROP POLICY IF EXISTS notification_outbox_via_case ON notification_outbox;
DROP POLICY IF EXISTS login_attempt_by_key_or_client ON login_attempt;
DROP POLICY IF EXISTS user_cell_via_user ON user_cell;
DROP POLICY IF EXISTS app_user_named_or_signed_in ON app_user;
DROP POLICY IF EXISTS web_session_by_token ON web_session;
ALTER TABLE grid_officer DISABLE ROW LEVEL SECURITY;
ALTER TABLE sync_run DISABLE ROW LEVEL SECURITY;
ALTER TABLE source DISABLE ROW LEVEL SECURITY;
ALTER TABLE coverage_snapshot DISABLE ROW LEVEL SECURITY;
ALTER TABLE escalation_step DISABLE ROW LEVEL SECURITY;
ALTER TABLE notification_outbox DISABLE ROW LEVEL SECURITY;
ALTER TABLE login_attempt DISABLE ROW LEVEL SECURITY;
ALTER TABLE user_cell DISABLE ROW LEVEL SECURITY;
ALTER TABLE app_user DISABLE ROW LEVEL SECURITY;
ALTER TABLE web_session DISABLE ROW LEVEL SECURITY;
GRANT DELETE ON web_session, login_attempt TO gridflow_app;
DROP FUNCTION IF EXISTS gridflow_city_visible(text);
DROP FUNCTION IF EXISTS gridflow_setting_bytes(text);
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM gridflow_flows;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM gridflow_flows;
"""
    )

"""The roster: grid officers synced from the city, officer ownership of cases, accounts tied to it.

Revision ID: 0012
Revises: 0011

* ``officer`` replaces ``grid_officer`` (0002, keyed by cell and a login name): one row per officer
  of a source's roster (``source_record_id`` is the roster's officer id), versioned like
  ``worker`` (row hash, first/last run, ``missed_full_runs``, soft delete, which also takes the
  officer out of post). The name is a staff name shown plainly to the officer's supervisors; the
  phone is personal: AES-GCM in ``phone_enc`` (purpose ``officer-pii``), keyed HMAC (purpose
  ``phone``, as a worker's) and a masked form. ``source_cursor`` admits the ``grid_officers`` stream.
* ``officer_cell``: the cells an officer serves (a cell may have several officers).
* ``case_file.owner_officer``: which officer of the owning cell owns a case. Chosen by the trigger
  ``case_file_owner_officer`` whenever a case lands on a cell (insert, or ``owner_code`` moves): the
  cell's one active officer, or among several ``gridflow_pick_officer``'s: fewest open cases, then
  the lowest id (``grid.cases.owners`` documents the rule; counts are as of the statement's start,
  and intake writes one case a statement). NULL when a division owns the case.
* ``app_user.officer_id``: an account tied to the roster; its cells are read from ``officer_cell``
  at sign-in and on every request (never copied), and are empty when the officer is inactive.
* ``account_audit``: every change to an account (who, what, when), with the account's scope for RLS.

RLS for ``gridflow_app``: officers and their cells by a visible cell, or the signed-in account's
own officer; the phone columns are not granted. An administrator (``gridflow.admin`` = ``on`` plus
its scope) may read and update the accounts and audit rows of its scope; a disabled account's
sessions are revoked through ``gridflow_revoke_sessions``. The restrictive ``case_file_officer_owns``
keeps an officer's transaction (``gridflow.officer``) off another officer's case.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        r"""
CREATE TABLE officer (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source              text        REFERENCES source (name),
    source_record_id    text        NOT NULL CHECK (source_record_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$'),
    name                text        NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 40),
    phone_hmac          bytea,
    phone_masked        text,
    phone_enc           bytea,
    active              boolean     NOT NULL DEFAULT true,
    source_updated_at   timestamptz,
    row_hash            bytea,
    first_run_id        bigint      REFERENCES sync_run (id),
    last_run_id         bigint      REFERENCES sync_run (id),
    missed_full_runs    smallint    NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz
);
-- An officer gone from two full snapshots (soft-deleted by the sync) is no longer in post.
CREATE FUNCTION officer_deleted_inactive() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.deleted_at IS NOT NULL THEN
        NEW.active := false;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER officer_deleted_inactive BEFORE INSERT OR UPDATE ON officer
    FOR EACH ROW EXECUTE FUNCTION officer_deleted_inactive();
CREATE UNIQUE INDEX officer_source_record ON officer (source, source_record_id);

-- The roster is a fourth synced stream.
ALTER TABLE source_cursor DROP CONSTRAINT source_cursor_entity_check;
ALTER TABLE source_cursor ADD CONSTRAINT source_cursor_entity_check
    CHECK (entity IN ('workers', 'enterprises', 'grid_officers', 'cases'));

CREATE TABLE officer_cell (
    officer_id  bigint NOT NULL REFERENCES officer (id) ON DELETE CASCADE,
    cell_code   text   NOT NULL CHECK (cell_code ~ '^[0-9]{15}$'),
    PRIMARY KEY (officer_id, cell_code)
);
CREATE INDEX officer_cell_cell ON officer_cell (cell_code);

-- What grid_officer held moves over: one officer per former account, named by it.
INSERT INTO officer (source_record_id, name, active)
    SELECT account, left(account, 40), bool_or(active) FROM grid_officer GROUP BY account;
INSERT INTO officer_cell (officer_id, cell_code)
    SELECT o.id, g.cell_code FROM grid_officer g JOIN officer o ON o.source_record_id = g.account AND o.source IS NULL
    WHERE g.active;
DROP TABLE grid_officer;

ALTER TABLE case_file ADD COLUMN owner_officer bigint REFERENCES officer (id);
CREATE INDEX case_file_owner_officer_open ON case_file (owner_officer)
    WHERE owner_officer IS NOT NULL AND state NOT IN ('resolved', 'closed');

-- The tie-break (grid.cases.owners.pick_officer is its documentation and test): the cell's active
-- officer with the fewest open cases, then the lowest id. SECURITY DEFINER: the count is over every
-- case, whatever the acting transaction may see.
CREATE FUNCTION gridflow_pick_officer(cell text) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT o.id FROM officer o JOIN officer_cell oc ON oc.officer_id = o.id
    WHERE o.active AND oc.cell_code = cell
    ORDER BY (SELECT count(*) FROM case_file c
              WHERE c.owner_officer = o.id AND c.state NOT IN ('resolved', 'closed')), o.id
    LIMIT 1
$$;

-- Whenever a case lands on a cell (insert, or owner_code moves): the cell's one active officer, or
-- among several the tie-break's; an officer named explicitly is kept only if it serves the cell;
-- NULL when a division owns the case or the cell has no active officer. SECURITY DEFINER (every
-- name schema-qualified, no SET clause: this runs once per row written): the roster and the counts
-- are read whatever the acting transaction may see.
CREATE FUNCTION case_file_owner_officer() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    candidates bigint[];
BEGIN
    IF length(NEW.owner_code) <> 15 THEN
        NEW.owner_officer := NULL;
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.owner_code = OLD.owner_code
       AND NEW.owner_officer IS NOT DISTINCT FROM OLD.owner_officer THEN
        RETURN NEW;
    END IF;
    SELECT pg_catalog.array_agg(o.id ORDER BY o.id) INTO candidates
    FROM public.officer_cell oc JOIN public.officer o ON o.id = oc.officer_id
    WHERE oc.cell_code = NEW.owner_code AND o.active;
    IF candidates IS NULL THEN
        NEW.owner_officer := NULL;
    ELSIF NEW.owner_officer IS NOT NULL AND NEW.owner_officer = ANY (candidates) THEN
        RETURN NEW;
    ELSIF pg_catalog.cardinality(candidates) = 1 THEN
        NEW.owner_officer := candidates[1];
    ELSE
        NEW.owner_officer := public.gridflow_pick_officer(NEW.owner_code);
    END IF;
    RETURN NEW;
END;
$$;
REVOKE ALL ON FUNCTION case_file_owner_officer() FROM PUBLIC;
CREATE TRIGGER case_file_owner_officer BEFORE INSERT OR UPDATE OF owner_code, owner_officer ON case_file
    FOR EACH ROW EXECUTE FUNCTION case_file_owner_officer();

ALTER TABLE app_user ADD COLUMN officer_id bigint REFERENCES officer (id);
ALTER TABLE app_user ADD CONSTRAINT app_user_officer_role CHECK (officer_id IS NULL OR role = 'grid_officer');
-- The roster's policies below look an officer's account up by officer on every request.
CREATE INDEX app_user_officer ON app_user (officer_id) WHERE officer_id IS NOT NULL;

CREATE TABLE account_audit (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    user_id     bigint      REFERENCES app_user (id) ON DELETE SET NULL,
    login       text        NOT NULL,
    scope_code  text        NOT NULL CHECK (scope_code ~ '^[0-9]{12}$'),
    action      text        NOT NULL CHECK (action IN ('add', 'disable', 'enable', 'reset_password',
                                'set_role')),
    detail      jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX account_audit_user ON account_audit (user_id, at);

-- Row-level security for the web.
CREATE FUNCTION gridflow_admin() RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(current_setting('gridflow.admin', true), '') = 'on'
$$;

ALTER TABLE officer_cell ENABLE ROW LEVEL SECURITY;
CREATE POLICY officer_cell_scope ON officer_cell FOR SELECT TO gridflow_app
    USING (gridflow_chain_visible(cell_code)
           OR EXISTS (SELECT 1 FROM app_user u WHERE u.officer_id = officer_cell.officer_id));

ALTER TABLE officer ENABLE ROW LEVEL SECURITY;
CREATE POLICY officer_scope ON officer FOR SELECT TO gridflow_app
    USING (EXISTS (SELECT 1 FROM officer_cell oc WHERE oc.officer_id = officer.id
                   AND gridflow_chain_visible(oc.cell_code))
           OR EXISTS (SELECT 1 FROM app_user u WHERE u.officer_id = officer.id));

CREATE POLICY app_user_admin ON app_user TO gridflow_app
    USING (gridflow_admin() AND gridflow_chain_visible(scope_code))
    WITH CHECK (gridflow_admin() AND gridflow_chain_visible(scope_code));
-- Disabling an account revokes its sessions; the web may not read sessions beyond its own, so the
-- revocation is a function that acts only on an account already disabled.
CREATE FUNCTION gridflow_revoke_sessions(uid bigint) RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH r AS (
        UPDATE web_session SET revoked_at = now()
        WHERE user_id = uid AND revoked_at IS NULL
          AND EXISTS (SELECT 1 FROM app_user u WHERE u.id = uid AND NOT u.active)
        RETURNING 1
    ) SELECT count(*)::integer FROM r
$$;
REVOKE ALL ON FUNCTION gridflow_revoke_sessions(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gridflow_revoke_sessions(bigint) TO gridflow_app;

-- The cells of the account a transaction signs in or resumes (login named by ``gridflow.login``, or
-- the session of ``gridflow.session``): its officer's cells now (none once the officer left) for an
-- account tied to the roster, else its own. One call instead of a query through four tables' row-
-- level security, whose planning cost more than the request (plpgsql keeps the plans). Any other
-- account: no cells.
CREATE FUNCTION gridflow_account_cells(uid bigint) RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER AS $$
DECLARE
    tied bigint;
    found_cells text[];
BEGIN
    SELECT u.officer_id INTO tied FROM public.app_user u
    WHERE u.id = uid AND (u.login = nullif(current_setting('gridflow.login', true), '')
        OR EXISTS (SELECT 1 FROM public.web_session s WHERE s.user_id = u.id
                   AND s.token_hash = public.gridflow_setting_bytes('gridflow.session')));
    IF NOT FOUND THEN
        RETURN ARRAY[]::text[];
    END IF;
    IF tied IS NULL THEN
        SELECT pg_catalog.array_agg(c.cell_code ORDER BY c.cell_code) INTO found_cells
        FROM public.user_cell c WHERE c.user_id = uid;
    ELSE
        SELECT pg_catalog.array_agg(oc.cell_code ORDER BY oc.cell_code) INTO found_cells
        FROM public.officer_cell oc JOIN public.officer o ON o.id = oc.officer_id
        WHERE oc.officer_id = tied AND o.active;
    END IF;
    RETURN coalesce(found_cells, ARRAY[]::text[]);
END;
$$;
REVOKE ALL ON FUNCTION gridflow_account_cells(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gridflow_account_cells(bigint) TO gridflow_app;

-- The officer half of "owns" in the database (grid.accounts.access.owns): a transaction that acts
-- for an officer (gridflow.officer = its id; "0" for an account not tied to the roster) may update
-- a case only when no officer, or that officer, owns it. Restrictive: it narrows case_file_scope.
CREATE POLICY case_file_officer_owns ON case_file AS RESTRICTIVE FOR UPDATE TO gridflow_app
    USING (coalesce(current_setting('gridflow.officer', true), '') = ''
           OR owner_officer IS NULL OR owner_officer::text = current_setting('gridflow.officer', true));

ALTER TABLE account_audit ENABLE ROW LEVEL SECURITY;
CREATE POLICY account_audit_admin ON account_audit TO gridflow_app
    USING (gridflow_admin() AND gridflow_chain_visible(scope_code))
    WITH CHECK (gridflow_admin() AND gridflow_chain_visible(scope_code));

GRANT SELECT (id, source, source_record_id, name, phone_masked, active) ON officer TO gridflow_app;
GRANT SELECT ON officer_cell TO gridflow_app;
GRANT UPDATE (active, role, password_hash, updated_at) ON app_user TO gridflow_app;
GRANT SELECT, INSERT ON account_audit TO gridflow_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON officer, officer_cell TO gridflow_flows;
"""
    )


def downgrade() -> None:
    op.execute(
        r"""
DROP TABLE IF EXISTS account_audit;
DROP POLICY IF EXISTS case_file_officer_owns ON case_file;
DROP FUNCTION IF EXISTS gridflow_revoke_sessions(bigint);
DROP FUNCTION IF EXISTS gridflow_account_cells(bigint);
DROP POLICY IF EXISTS app_user_admin ON app_user;
REVOKE UPDATE (active, role, password_hash, updated_at) ON app_user FROM gridflow_app;
DROP POLICY IF EXISTS officer_scope ON officer;
DROP POLICY IF EXISTS officer_cell_scope ON officer_cell;
DROP FUNCTION IF EXISTS gridflow_admin();
ALTER TABLE app_user DROP COLUMN IF EXISTS officer_id;
DROP TRIGGER IF EXISTS case_file_owner_officer ON case_file;
DROP FUNCTION IF EXISTS case_file_owner_officer();
DROP FUNCTION IF EXISTS gridflow_pick_officer(text);
ALTER TABLE case_file DROP COLUMN IF EXISTS owner_officer;
CREATE TABLE grid_officer (
    cell_code   text        NOT NULL CHECK (cell_code ~ '^[0-9]{15}$'),
    account     text        NOT NULL,
    active      boolean     NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cell_code, account)
);
CREATE INDEX grid_officer_active_cell ON grid_officer (cell_code) WHERE active;
INSERT INTO grid_officer (cell_code, account, active)
    SELECT oc.cell_code, left(o.source_record_id, 40), o.active
    FROM officer o JOIN officer_cell oc ON oc.officer_id = o.id
    ON CONFLICT DO NOTHING;
ALTER TABLE grid_officer ENABLE ROW LEVEL SECURITY;
CREATE POLICY grid_officer_scope ON grid_officer FOR SELECT TO gridflow_app
    USING (gridflow_chain_visible(cell_code));
GRANT SELECT ON grid_officer TO gridflow_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON grid_officer TO gridflow_flows;
DROP TABLE IF EXISTS officer_cell, officer;
DELETE FROM source_cursor WHERE entity = 'grid_officers';
ALTER TABLE source_cursor DROP CONSTRAINT source_cursor_entity_check;
ALTER TABLE source_cursor ADD CONSTRAINT source_cursor_entity_check
    CHECK (entity IN ('workers', 'enterprises', 'cases'));
DROP FUNCTION IF EXISTS officer_deleted_inactive();
"""
    )

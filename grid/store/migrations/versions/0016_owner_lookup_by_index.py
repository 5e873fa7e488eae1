"""Case ownership at scale: the roster lookups of the owner trigger by index only.

``case_file_owner_officer`` (migration 0012) runs for every case row written and read the cell's
active officers through a join of ``officer_cell`` with ``officer``. Without fresh statistics on
the roster (a roster loaded in the same transaction, or not analysed yet) the planner hashed the
whole ``officer`` table for every case row: seeding 200,000 cases over a 50,000-officer roster
(``bench/bench_reroute.py``) ran for more than 16 minutes without finishing. The officer's
``active`` flag is now read per candidate through the primary key (a correlated sub-select the
planner cannot turn into a hash join), in the trigger and in the tie-break
``gridflow_pick_officer``. Same rule, same result (``tests/grid/test_officers.py``).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_PICK = """
CREATE OR REPLACE FUNCTION gridflow_pick_officer(cell text) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT oc.officer_id FROM officer_cell oc
    WHERE oc.cell_code = cell AND (SELECT o.active FROM officer o WHERE o.id = oc.officer_id)
    ORDER BY (SELECT count(*) FROM case_file c
              WHERE c.owner_officer = oc.officer_id AND c.state NOT IN ('resolved', 'closed')),
             oc.officer_id
    LIMIT 1
$$;
"""

_CANDIDATES_NEW = """    SELECT pg_catalog.array_agg(oc.officer_id ORDER BY oc.officer_id) INTO candidates
    FROM public.officer_cell oc
    WHERE oc.cell_code = NEW.owner_code
      AND (SELECT o.active FROM public.officer o WHERE o.id = oc.officer_id);"""

_CANDIDATES_OLD = """    SELECT pg_catalog.array_agg(o.id ORDER BY o.id) INTO candidates
    FROM public.officer_cell oc JOIN public.officer o ON o.id = oc.officer_id
    WHERE oc.cell_code = NEW.owner_code AND o.active;"""

_TRIGGER = """
CREATE OR REPLACE FUNCTION case_file_owner_officer() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
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
{candidates}
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
"""

_PICK_OLD = """
CREATE OR REPLACE FUNCTION gridflow_pick_officer(cell text) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT o.id FROM officer o JOIN officer_cell oc ON oc.officer_id = o.id
    WHERE o.active AND oc.cell_code = cell
    ORDER BY (SELECT count(*) FROM case_file c
              WHERE c.owner_officer = o.id AND c.state NOT IN ('resolved', 'closed')), o.id
    LIMIT 1
$$;
"""


def upgrade() -> None:
    op.execute(_PICK + _TRIGGER.replace("{candidates}", _CANDIDATES_NEW))


def downgrade() -> None:
    op.execute(_PICK_OLD + _TRIGGER.replace("{candidates}", _CANDIDATES_OLD))

"""Foundation: divisions, versioned grid cells, sources, workers, enterprises, sync runs, quarantine.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        r"""
CREATE EXTENSION IF NOT EXISTS postgis;

-- Administrative divisions, five levels, versioned by validity dates (valid_to exclusive, NULL = current).
CREATE TABLE division (
    code        char(12)  NOT NULL CHECK (code ~ '^[0-9]{12}$'),
    level       smallint  NOT NULL CHECK (level BETWEEN 1 AND 5),
    name        text      NOT NULL,
    parent_code char(12)  CHECK (parent_code IS NULL OR parent_code ~ '^[0-9]{12}$'),
    geom        geometry(MultiPolygon, 4326),
    generated   boolean   NOT NULL DEFAULT false,
    source      text      NOT NULL,
    valid_from  date      NOT NULL DEFAULT DATE '1900-01-01',
    valid_to    date,
    PRIMARY KEY (code, valid_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE UNIQUE INDEX division_current_code ON division (code) WHERE valid_to IS NULL;
CREATE INDEX division_parent ON division (parent_code) WHERE valid_to IS NULL;
CREATE INDEX division_geom ON division USING gist (geom);

-- A committed grid import: one version of a city's cells.
CREATE TABLE cell_version (
    id          serial PRIMARY KEY,
    label       text        NOT NULL,
    scope_code  char(12)    NOT NULL,
    valid_from  date        NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    generated   boolean     NOT NULL DEFAULT false,
    note        text        NOT NULL DEFAULT ''
);

-- Grid cells: 15-digit code = 12-digit community code + 3-digit sequence.
CREATE TABLE grid_cell (
    code           char(15) NOT NULL CHECK (code ~ '^[0-9]{15}$'),
    community_code char(12) NOT NULL CHECK (community_code = substr(code, 1, 12)),
    name           text     NOT NULL,
    geom           geometry(MultiPolygon, 4326) NOT NULL,
    version_id     integer  NOT NULL REFERENCES cell_version (id),
    generated      boolean  NOT NULL DEFAULT false,
    valid_from     date     NOT NULL,
    valid_to       date,
    PRIMARY KEY (code, valid_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE UNIQUE INDEX grid_cell_current_code ON grid_cell (code) WHERE valid_to IS NULL;
CREATE INDEX grid_cell_community ON grid_cell (community_code) WHERE valid_to IS NULL;
CREATE INDEX grid_cell_geom ON grid_cell USING gist (geom);

-- Municipal source systems, one per city connector config.
CREATE TABLE source (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]*$'),
    display_name text        NOT NULL,
    city_code    char(12)    NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('http', 'file')),
    crs          text        NOT NULL,
    enabled      boolean     NOT NULL DEFAULT true,
    config       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Where each (source, entity) stream stands; advanced in the same transaction as a page's rows.
-- A stream that ends moves since := high_water and clears the cursor.
CREATE TABLE source_cursor (
    source     text        NOT NULL REFERENCES source (name),
    entity     text        NOT NULL CHECK (entity IN ('workers', 'enterprises', 'cases')),
    cursor     text,            -- keyset position inside the current stream; NULL between runs
    since      timestamptz,     -- the watermark the current stream started from (inclusive)
    high_water timestamptz,     -- newest source update time committed so far
    full_run_id bigint,         -- the run that started the full snapshot in progress, if any
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, entity)
);

CREATE TABLE sync_run (
    id            bigserial PRIMARY KEY,
    source        text        NOT NULL REFERENCES source (name),
    flow_run_id   uuid,            -- the Prefect flow run of this source's sync
    parent_flow_run_id uuid,       -- the nightly run that started it, if any
    mode          text        NOT NULL DEFAULT 'incremental' CHECK (mode IN ('incremental', 'full')),
    status        text        NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'completed', 'failed', 'crashed')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    pages         integer     NOT NULL DEFAULT 0,
    received      integer     NOT NULL DEFAULT 0,
    loaded        integer     NOT NULL DEFAULT 0,
    unchanged     integer     NOT NULL DEFAULT 0,
    quarantined   integer     NOT NULL DEFAULT 0,
    unmapped      integer     NOT NULL DEFAULT 0,
    counts        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    cursor_before jsonb       NOT NULL DEFAULT '{}'::jsonb,
    cursor_after  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    error         text
);
CREATE INDEX sync_run_source_started ON sync_run (source, started_at DESC);

-- Enterprises. Geographic cell and line of union affiliation are kept apart.
CREATE TABLE enterprise (
    id                  bigserial PRIMARY KEY,
    source              text        NOT NULL REFERENCES source (name),
    source_record_id    text        NOT NULL,
    source_updated_at   timestamptz NOT NULL,
    uscc                char(18)    NOT NULL,
    name                text        NOT NULL,
    union_established   boolean     NOT NULL DEFAULT false,
    employee_count      integer,
    address             text,
    affiliation_code    text,
    legal_rep_phone_hmac bytea,
    legal_rep_phone_enc  bytea,
    legal_rep_phone_masked text,
    geom                geometry(Point, 4326),
    cell_code           char(15)    CHECK (cell_code ~ '^[0-9]{15}$'),
    division_code       char(12)    CHECK (division_code ~ '^[0-9]{12}$'),
    placement_method    text        NOT NULL,
    unmapped_reason     text,
    row_hash            bytea       NOT NULL,
    first_run_id        bigint      REFERENCES sync_run (id),
    last_run_id         bigint      REFERENCES sync_run (id),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    missed_full_runs    smallint    NOT NULL DEFAULT 0,
    UNIQUE (source, source_record_id)
);
CREATE INDEX enterprise_uscc ON enterprise (uscc);
CREATE INDEX enterprise_cell ON enterprise (cell_code);
CREATE INDEX enterprise_division ON enterprise (division_code);

-- Workers. ID, phone, name and home address are personal information: stored together encrypted
-- (AES-256-GCM, one blob per version), matched by keyed HMAC, shown masked.
CREATE TABLE worker (
    id                  bigserial PRIMARY KEY,
    source              text        NOT NULL REFERENCES source (name),
    source_record_id    text        NOT NULL,
    source_updated_at   timestamptz NOT NULL,
    id_hmac             bytea       NOT NULL,
    id_masked           text        NOT NULL,
    name_masked         text        NOT NULL,
    gender              char(1)     CHECK (gender IN ('M', 'F')),
    birth_year          smallint,
    phone_hmac          bytea,
    phone_masked        text,
    pii_enc             bytea       NOT NULL,   -- AES-256-GCM of {"id", "name", "phone", "address"}
    enterprise_uscc     char(18),
    geom                geometry(Point, 4326),
    cell_code           char(15)    CHECK (cell_code ~ '^[0-9]{15}$'),
    division_code       char(12)    CHECK (division_code ~ '^[0-9]{12}$'),
    placement_method    text        NOT NULL,
    unmapped_reason     text,
    row_hash            bytea       NOT NULL,
    first_run_id        bigint      REFERENCES sync_run (id),
    last_run_id         bigint      REFERENCES sync_run (id),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    missed_full_runs    smallint    NOT NULL DEFAULT 0,
    UNIQUE (source, source_record_id)
);
CREATE INDEX worker_id_hmac ON worker (id_hmac);
CREATE INDEX worker_cell ON worker (cell_code);
CREATE INDEX worker_division ON worker (division_code);

-- Record ids seen by a full resync, per run (COPY per page; emptied when the run ends). A record
-- missing from two consecutive full snapshots is soft-deleted.
CREATE TABLE full_seen (
    run_id           bigint NOT NULL REFERENCES sync_run (id) ON DELETE CASCADE,
    entity           text   NOT NULL,
    source_record_id text   NOT NULL
);
CREATE INDEX full_seen_run ON full_seen (run_id, entity, source_record_id);

-- Records not loaded, with a reason code from connectors.reasons.Reason. The raw record is kept
-- encrypted so it can be reprocessed; detail never carries personal data.
CREATE TABLE quarantine (
    id               bigserial PRIMARY KEY,
    source           text        NOT NULL REFERENCES source (name),
    entity           text        NOT NULL,
    run_id           bigint      NOT NULL REFERENCES sync_run (id),
    last_run_id      bigint      NOT NULL REFERENCES sync_run (id),
    source_record_id text,
    reason_code      text        NOT NULL,
    field            text,
    detail           text        NOT NULL DEFAULT '',
    raw_hmac         bytea       NOT NULL,
    raw_enc          bytea       NOT NULL,
    seen_count       integer     NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at      timestamptz,
    resolution       text
);
CREATE UNIQUE INDEX quarantine_open_once ON quarantine (source, entity, raw_hmac, reason_code)
    WHERE resolved_at IS NULL;
CREATE INDEX quarantine_source_reason ON quarantine (source, reason_code) WHERE resolved_at IS NULL;
"""
    )


def downgrade() -> None:
    op.execute(
        """
DROP TABLE IF EXISTS full_seen, quarantine, worker, enterprise, sync_run, source_cursor, source,
    grid_cell, cell_version, division CASCADE;
"""
    )

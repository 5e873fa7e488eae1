"""What the web's database role may read of every relation in the schema: one classification.

The web works as ``gridflow_app`` (migrations 0003, 0005, 0007). Every table or view of the
``public`` schema is one of:

* ``SCOPED`` — holds scoped or secret data; the web reads it under row-level security (or through a
  view filtering by the same rule), so a transaction that stated no scope, login or session reads
  nothing from it;
* ``NO_READ`` — the web may not SELECT it at all;
* ``REFERENCE`` — public reference data (administrative divisions, grid geometry, union units,
  coordinate systems): no personal data and nothing a scope hides.

``tests/grid/test_database_roles.py`` walks every relation of the schema and fails on one missing
here, so a new table is classified when it is made.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class WebAccess(StrEnum):
    SCOPED = "scoped"
    NO_READ = "no_read"
    REFERENCE = "reference"


S, N, R = WebAccess.SCOPED, WebAccess.NO_READ, WebAccess.REFERENCE

#: relation -> (what the web may read, why)
RELATIONS: Final[dict[str, tuple[WebAccess, str]]] = {
    # accounts and sessions: secrets (argon2 hashes, CSRF tokens, client addresses)
    "app_user": (S, "password hashes; visible by the login being checked or a live session"),
    "user_cell": (S, "an officer's cells; visible with the account"),
    "web_session": (S, "CSRF tokens; visible by the token hash of the request"),
    "login_attempt": (S, "client addresses; visible by the login key or client being throttled"),
    # cases and people
    "case_file": (S, "cases; by the chain code"),
    "worker": (S, "people (encrypted, masked); via a visible case"),
    "reveal_audit": (S, "who revealed what; via a visible case"),
    "escalation_step": (S, "deadlines of cases; via a visible case"),
    "notification_outbox": (S, "notices of every scope; via a visible case"),
    "case_event": (N, "written by the web (INSERT only); read through case_event_scoped"),
    "case_event_scoped": (S, "view of case_event filtered by the visibility rule"),
    "supervision_ledger": (S, "view of the ledger filtered by the visibility rule for the web"),
    "supervision_ledger_all": (N, "the unfiltered ledger, for flows and the CLI"),
    "case_intake": (N, "source references of intake; flows only"),
    "case_worker": (N, "keyed HMACs of the workers attached reports named; intake only"),
    "enterprise": (N, "synced enterprises; flows only"),
    "full_seen": (N, "full-snapshot bookkeeping; flows only"),
    "source_cursor": (N, "sync cursors; flows only"),
    # sync and monitoring
    "source": (S, "a city's source configuration; a scope sees the sources of its city"),
    "sync_run": (S, "runs, counts and errors; via a visible source"),
    "quarantine": (S, "rejected records (encrypted); via a source in scope"),
    "reprocess_request": (S, "who asked to reprocess; via a source in scope"),
    "coverage_snapshot": (S, "the four fulls per division; by the division code"),
    "coverage_note": (S, "records pending verification per division; by the division code"),
    "field_problem": (S, "fields left empty (raw values encrypted); via a source in scope"),
    "coverage_run": (R, "dates and times a snapshot was computed; no division, no person"),
    "officer": (S, "the roster: staff names, masked and encrypted phones; by a visible cell or own account"),
    "officer_cell": (S, "the cells each officer serves; by the cell code or own account"),
    "account_audit": (S, "who changed which account, when; an administrator of the account's scope"),
    # reference
    "division": (R, "administrative divisions: public codes, names and boundaries"),
    "grid_cell": (R, "grid cell geometry: public reference"),
    "cell_version": (R, "versions of the grid: labels and dates"),
    "unit": (R, "union units: public organisation names per division"),
    "spatial_ref_sys": (R, "PostGIS coordinate systems"),
    "geometry_columns": (R, "PostGIS catalogue view"),
    "geography_columns": (R, "PostGIS catalogue view"),
    "alembic_version": (N, "the schema revision"),
}

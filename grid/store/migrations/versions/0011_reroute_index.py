"""Re-routing by set operations: grid cells looked up by (version, code).

The re-route of a cell import (``grid.cases.reroute_plan``) joins a superseded version's cells to
the new version's on code, and its cases to their cells. ``grid_cell_current_code`` only covers
current rows (``valid_to IS NULL``), and the superseded rows are closed by then, so every lookup
of an old cell by code scanned the whole table; this index serves both versions.

Revision ID: 0011
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS grid_cell_version_code ON grid_cell (version_id, code)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS grid_cell_version_code")

"""Notices that arrive: the route a delivery took, a re-queue by an operator, and read marks for
the in-app 通知 list.

* ``notification_outbox.delivered_via`` — the routing rule of the last attempt (``robot:NAME
  (own code)``, ``robot:NAME (unit above CODE)``, ``webhook:union``…; never a URL);
  ``requeued_at`` / ``requeued_by`` — the last time an administrator put a failed notice back in
  the queue from ``/admin/outbox`` (the web's ``gridflow_app`` already may UPDATE the outbox, under
  row-level security via the case).
* ``notice_read`` (user, notice, when): a user's read marks. Row-level security for
  ``gridflow_app``: a row is visible and writable only for the user of the signed-in session the
  transaction states (``gridflow.session``, as ``app_user``), and only for a notice of a visible
  case. Deleted with the user or the notice.
* an index on the outbox by recipient for the per-user list and its unread count.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        r"""
ALTER TABLE notification_outbox
    ADD COLUMN delivered_via text,
    ADD COLUMN requeued_at timestamptz,
    ADD COLUMN requeued_by text;
CREATE INDEX notification_outbox_recipient ON notification_outbox (recipient_code, id);
CREATE INDEX notification_outbox_failed ON notification_outbox (failed_at) WHERE failed_at IS NOT NULL;

CREATE TABLE notice_read (
    user_id    bigint      NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    notice_id  bigint      NOT NULL REFERENCES notification_outbox (id) ON DELETE CASCADE,
    read_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, notice_id)
);
CREATE INDEX notice_read_notice ON notice_read (notice_id);

ALTER TABLE notice_read ENABLE ROW LEVEL SECURITY;
CREATE POLICY notice_read_own ON notice_read TO gridflow_app
    USING (EXISTS (SELECT 1 FROM web_session s WHERE s.user_id = notice_read.user_id)
           AND EXISTS (SELECT 1 FROM notification_outbox o WHERE o.id = notice_read.notice_id))
    WITH CHECK (EXISTS (SELECT 1 FROM web_session s WHERE s.user_id = notice_read.user_id)
           AND EXISTS (SELECT 1 FROM notification_outbox o WHERE o.id = notice_read.notice_id));
GRANT SELECT, INSERT ON notice_read TO gridflow_app;
GRANT SELECT, DELETE ON notice_read TO gridflow_flows;
"""
    )


def downgrade() -> None:
    op.execute(
        """
DROP TABLE IF EXISTS notice_read;
DROP INDEX IF EXISTS notification_outbox_failed;
DROP INDEX IF EXISTS notification_outbox_recipient;
ALTER TABLE notification_outbox
    DROP COLUMN IF EXISTS requeued_by,
    DROP COLUMN IF EXISTS requeued_at,
    DROP COLUMN IF EXISTS delivered_via;
"""
    )

"""workers: workflows.cancel_requested (a cancel every worker sees), tasks by workflow
and status (is anything of this workflow left?), and the ready tasks a claim scans

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_workflow_status", ["workflow_id", "status"], unique=False)
        batch_op.create_index(
            "ix_tasks_ready",
            ["workflow_id", "position"],
            unique=False,
            postgresql_where=sa.text("status = 'Pending' AND pending_dependencies = 0"),
            sqlite_where=sa.text("status = 'Pending' AND pending_dependencies = 0"),
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_ready")
        batch_op.drop_index("ix_tasks_workflow_status")
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_column("cancel_requested")

"""one compensation in flight per task: a unique index on `tasks.compensates` over the
compensations still pending or running, so that two rollbacks (in two processes on one
database, say) cannot both be undoing one task

A compensation that completed is not in the index (a task undone twice before this
revision stays as it was recorded): a rollback's own transaction checks, after its
insert, that none of its tasks was undone meanwhile (`orchestrator.store.rollbacks`).

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IN_FLIGHT = "compensates IS NOT NULL AND status IN ('Pending', 'Running')"
DOUBLED = (
    "SELECT compensates, COUNT(*) FROM tasks "
    "WHERE compensates IS NOT NULL AND status IN ('Pending', 'Running') "
    "GROUP BY compensates HAVING COUNT(*) > 1"
)


def upgrade() -> None:
    doubled = op.get_bind().execute(sa.text(DOUBLED)).all()
    if doubled:
        tasks = ", ".join(str(row[0]) for row in doubled[:10])
        raise RuntimeError(
            f"{len(doubled)} task(s) are being undone by two rollbacks at once ({tasks}): "
            "let those rollbacks end (or cancel them) with the previous version, then upgrade"
        )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(
            "uq_tasks_compensation_in_flight",
            ["compensates"],
            unique=True,
            postgresql_where=sa.text(IN_FLIGHT),
            sqlite_where=sa.text(IN_FLIGHT),
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("uq_tasks_compensation_in_flight")

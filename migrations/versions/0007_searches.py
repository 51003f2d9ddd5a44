"""searches: a search is the parent of its candidate jobs; jobs carry their search, candidate label, the
result-cache key, the job a cached result was reused from, the search's note on why it stopped them, and the
fidelity measured after their latest step (which the search reads to stop a hopeless candidate early)

Revision ID: 0007_searches
Revises: 0006_rate_buckets
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_searches"
down_revision: str | None = "0006_rate_buckets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "searches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("candidates", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("chosen_job_id", sa.String(length=40), nullable=True),
        sa.Column("verdict", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_searches_tenant_created_at", "searches", ["tenant", "created_at"])
    op.create_index("ix_searches_status", "searches", ["status"])
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("search_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("candidate", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("cache_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("reused_from", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("search_note", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("interim", sa.JSON(), nullable=True))
        batch_op.create_foreign_key("fk_jobs_search_id", "searches", ["search_id"], ["id"], ondelete="CASCADE")
        batch_op.create_index("ix_jobs_search_id", ["search_id"])
        batch_op.create_index("ix_jobs_tenant_cache_key", ["tenant", "cache_key"])


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_tenant_cache_key")
        batch_op.drop_index("ix_jobs_search_id")
        batch_op.drop_constraint("fk_jobs_search_id", type_="foreignkey")
        for column in ("interim", "search_note", "reused_from", "cache_key", "candidate", "search_id"):
            batch_op.drop_column(column)
    op.drop_index("ix_searches_status", table_name="searches")
    op.drop_index("ix_searches_tenant_created_at", table_name="searches")
    op.drop_table("searches")

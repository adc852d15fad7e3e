"""A completed job's fit beside what the request said (``service.schemas.FitSummary``: the fitted
mass, the typed weight, the clothing said and read); null for other jobs and earlier ones.

Revision ID: 0006_fit
Revises: 0005_clothing
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_fit"
down_revision = "0005_clothing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("fit", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("fit")

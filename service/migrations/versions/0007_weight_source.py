"""Where the weight comes from (``reported`` | ``scale``), as the create request said; the worker
hands it to the fit. Jobs from before it were all fitted as ``reported``.

Revision ID: 0007_weight_source
Revises: 0006_fit
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_weight_source"
down_revision = "0006_fit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("weight_source", sa.String(16), nullable=False, server_default="reported"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("weight_source")

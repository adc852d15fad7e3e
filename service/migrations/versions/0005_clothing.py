"""What the person in the photo wears (``regular`` | ``fitted``), as the create request said; the
worker hands it to the fit.

Revision ID: 0005_clothing
Revises: 0004_operator
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_clothing"
down_revision = "0004_operator"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("clothing", sa.String(16), nullable=False, server_default="regular"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("clothing")

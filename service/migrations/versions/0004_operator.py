"""Operator keys: an API key flagged ``is_operator`` manages every tenant's credits (admin keys
reach only their own tenant).

Revision ID: 0004_operator
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_operator"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("is_operator", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("is_operator")

"""RunPod both ways: the RunPod job following a job (BACKEND=runpod), and what a /v2 request
asked for (its endpoint, webhook and policy), the webhook's delivery state and /retry's count.

Revision ID: 0002_runpod
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002_runpod"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("runpod_id", sa.String(128)))
        batch.add_column(sa.Column("v2_endpoint", sa.String(64)))
        batch.add_column(sa.Column("v2_request", sa.JSON))
        batch.add_column(sa.Column("webhook_state", sa.String(16)))
        batch.add_column(sa.Column("retries", sa.Integer, nullable=False, server_default="0"))
        batch.create_index("ix_jobs_tenant_v2_endpoint", ["tenant", "v2_endpoint"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_tenant_v2_endpoint")
        batch.drop_column("retries")
        batch.drop_column("webhook_state")
        batch.drop_column("v2_request")
        batch.drop_column("v2_endpoint")
        batch.drop_column("runpod_id")

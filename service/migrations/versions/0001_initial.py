"""Initial schema: api keys, jobs, avatars (fit passports), events.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS),
        sa.Column("revoked_at", TS),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Integer, nullable=False),
        sa.Column("stage", sa.String(32)),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("photo_key", sa.String(512)),
        sa.Column("photo_source_url", sa.Text),
        sa.Column("height_cm", sa.Float, nullable=False),
        sa.Column("weight_kg", sa.Float),
        sa.Column("gender", sa.String(16), nullable=False),
        sa.Column("body_model", sa.String(16)),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("measurements", sa.JSON, nullable=False),
        sa.Column("timings", sa.JSON, nullable=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text),
        sa.Column("worker", sa.String(128)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("completed_at", TS),
    )
    op.create_index("ix_jobs_tenant_user", "jobs", ["tenant", "user_id"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "avatars",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("latest_job_id", sa.String(32), sa.ForeignKey("jobs.id")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("avatar_job_id", sa.String(32)),
        sa.Column("avatar_key", sa.String(512)),
        sa.Column("measurements", sa.JSON, nullable=False),
        sa.Column("manual_measurements", sa.JSON, nullable=False),
        sa.Column("pipeline_files", sa.JSON, nullable=False),
        sa.Column("processing_started_at", TS),
        sa.Column("processing_completed_at", TS),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("properties", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_events_tenant_user", "events", ["tenant", "user_id"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("avatars")
    op.drop_table("jobs")
    op.drop_table("api_keys")

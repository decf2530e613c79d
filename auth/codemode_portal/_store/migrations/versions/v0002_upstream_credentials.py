"""Each user's own upstream credentials (sealed), pending OAuth flows, external (OIDC) identities.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

URL = 2048
HASH = 64


def upgrade() -> None:
    op.create_table(
        "upstream_credentials",
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("server", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("scheme", sa.String(200), nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("refresh", sa.Text, nullable=True),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "pending_flows",
        sa.Column("state_hash", sa.String(HASH), primary_key=True),
        sa.Column("purpose", sa.String(8), nullable=False),
        sa.Column("session_hash", sa.String(HASH), nullable=False),
        sa.Column("verifier", sa.Text, nullable=False),
        sa.Column("server", sa.String(64), nullable=True),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("nonce", sa.String(128), nullable=True),
        sa.Column("next_url", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_pending_flows_expires_at", "pending_flows", ["expires_at"])
    op.create_table(
        "external_identities",
        sa.Column("issuer", sa.String(URL), primary_key=True),
        sa.Column("subject", sa.String(255), primary_key=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_login_at", sa.Float, nullable=True),
    )
    op.create_index("ix_external_identities_user_id", "external_identities", ["user_id"])


def downgrade() -> None:
    for name in ("external_identities", "pending_flows", "upstream_credentials"):
        op.drop_table(name)

"""The portal's first schema: users, clients, grants, codes, tokens, sessions, rate events, secrets, audit.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

URL = 2048
HASH = 64


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(URL), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("redirect_uris", sa.Text, nullable=False),
        sa.Column("auth_method", sa.String(32), nullable=False),
        sa.Column("grant_types", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.String(HASH), nullable=True),
        sa.Column("client_uri", sa.String(URL), nullable=True),
        sa.Column("metadata_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "grants",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("client_id", sa.String(URL), nullable=False),
        sa.Column("server", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(URL), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    op.create_index("ix_grants_user_id", "grants", ["user_id"])
    op.create_table(
        "codes",
        sa.Column("hash", sa.String(HASH), primary_key=True),
        sa.Column("grant_id", sa.String(32), sa.ForeignKey("grants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("client_id", sa.String(URL), nullable=False),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        sa.Column("resource", sa.String(URL), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
    )
    op.create_index("ix_codes_grant_id", "codes", ["grant_id"])
    op.create_table(
        "tokens",
        sa.Column("hash", sa.String(HASH), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("grant_id", sa.String(32), sa.ForeignKey("grants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("client_id", sa.String(URL), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("server", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(URL), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("used_at", sa.Float, nullable=True),
    )
    op.create_index("ix_tokens_grant_id", "tokens", ["grant_id"])
    op.create_index("ix_tokens_expires_at", "tokens", ["expires_at"])
    op.create_table(
        "sessions",
        sa.Column("hash", sa.String(HASH), primary_key=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])
    op.create_table(
        "rate_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_rate_events_key_at", "rate_events", ["key", "at"])
    op.create_table(
        "secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("client_id", sa.String(URL), nullable=True),
        sa.Column("server", sa.String(64), nullable=True),
        sa.Column("operation", sa.String(300), nullable=True),
        sa.Column("status", sa.String(64), nullable=True),
        sa.Column("detail", sa.String(500), nullable=True),
    )
    op.create_index("ix_audit_at", "audit", ["at"])
    op.create_index("ix_audit_server", "audit", ["server"])


def downgrade() -> None:
    for name in ("audit", "secrets", "rate_events", "sessions", "tokens", "codes", "grants", "clients", "users"):
        op.drop_table(name)

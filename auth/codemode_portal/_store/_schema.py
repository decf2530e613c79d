"""The tables, as SQLAlchemy Core metadata. Alembic migrations (``migrations/``) create them;
a test checks that the migrated database matches this metadata exactly."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text

__all__ = [
    "audit",
    "clients",
    "codes",
    "external_identities",
    "grants",
    "metadata",
    "pending_flows",
    "rate_events",
    "secrets",
    "sessions",
    "tokens",
    "upstream_credentials",
    "users",
]

metadata = MetaData()

URL = 2048  # client ids may be metadata-document URLs
HASH = 64  # hex SHA-256

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("password_hash", String(256), nullable=False),
    Column("is_admin", Boolean, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
)

clients = Table(
    "clients",
    metadata,
    Column("client_id", String(URL), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("redirect_uris", Text, nullable=False),  # JSON list
    Column("auth_method", String(32), nullable=False),
    Column("grant_types", Text, nullable=False),  # JSON list
    Column("secret_hash", String(HASH), nullable=True),
    Column("client_uri", String(URL), nullable=True),
    Column("metadata_json", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

grants = Table(
    "grants",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("client_id", String(URL), nullable=False),
    Column("server", String(64), nullable=False),
    Column("resource", String(URL), nullable=False),
    Column("scopes", Text, nullable=False),  # space-separated
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

codes = Table(
    "codes",
    metadata,
    Column("hash", String(HASH), primary_key=True),
    Column("grant_id", String(32), ForeignKey("grants.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("client_id", String(URL), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("resource", String(URL), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),
)

tokens = Table(
    "tokens",
    metadata,
    Column("hash", String(HASH), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("grant_id", String(32), ForeignKey("grants.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("client_id", String(URL), nullable=False),
    Column("user_id", String(32), nullable=False),
    Column("server", String(64), nullable=False),
    Column("resource", String(URL), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
    Column("revoked_at", Float, nullable=True),
    Column("used_at", Float, nullable=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("hash", String(HASH), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)

rate_events = Table(
    "rate_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(300), nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_rate_events_key_at", "key", "at"),
)

secrets = Table(
    "secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False, index=True),
    Column("event", String(32), nullable=False),
    Column("user_id", String(32), nullable=True),
    Column("client_id", String(URL), nullable=True),
    Column("server", String(64), nullable=True, index=True),
    Column("operation", String(300), nullable=True),
    Column("status", String(64), nullable=True),
    Column("detail", String(500), nullable=True),
)

# -- each user's own upstream credentials, pending OAuth flows, external identities (migration 0002)
upstream_credentials = Table(
    "upstream_credentials",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("server", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("scheme", String(200), nullable=False),
    Column("secret", Text, nullable=False),  # sealed (AES-GCM), never clear
    Column("refresh", Text, nullable=True),  # sealed
    Column("expires_at", Float, nullable=True),
    Column("scopes", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("lease_until", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

pending_flows = Table(
    "pending_flows",
    metadata,
    Column("state_hash", String(HASH), primary_key=True),
    Column("purpose", String(8), nullable=False),
    Column("session_hash", String(HASH), nullable=False),
    Column("verifier", Text, nullable=False),  # sealed
    Column("server", String(64), nullable=True),
    Column("user_id", String(32), nullable=True),
    Column("nonce", String(128), nullable=True),
    Column("next_url", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)

external_identities = Table(
    "external_identities",
    metadata,
    Column("issuer", String(URL), primary_key=True),
    Column("subject", String(255), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("last_login_at", Float, nullable=True),
)

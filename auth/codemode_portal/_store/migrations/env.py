"""Alembic environment: always run on the connection the portal hands over (see ``_migrate``)."""

from __future__ import annotations

from alembic import context

from codemode_portal._store._schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the portal always passes its connection
    raise RuntimeError("run migrations through codemode_portal._store._migrate.upgrade()")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()

"""Alembic environment: migrations run on the connection `Database.migrate` passes in."""

from alembic import context
from sqlmodel import SQLModel

from foodcal.store import rollouts, tables  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

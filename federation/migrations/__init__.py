"""Alembic migrations: one linear history for the core and every extension."""

"""Alembic migrations of the meshgram database (applied by data_access.migrate)."""

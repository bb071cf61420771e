"""pgqueue's Alembic migrations (branch label ``pgqueue``), shipped as ``pgqueue.migrations``."""

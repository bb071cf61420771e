"""Database adapters: each implements :mod:`pgqueue.executor` for one driver."""

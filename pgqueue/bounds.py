"""The ranges pgqueue accepts for durations and counts, shared by the options, the envelope's
decisions and the store's checks (a leaf module: it imports nothing of pgqueue)."""

MAX_WORKER_COUNT = 10_000
MAX_SECONDS = 10 * 365.25 * 86_400
"""Upper bound of every duration pgqueue accepts (push delays, retry delays, timeouts,
retention): ten years. Beyond it a value is surely a unit mistake, and far enough beyond it
PostgreSQL's timestamp arithmetic overflows."""
MAX_ATTEMPTS = 1_000_000
"""Upper bound of ``max_attempts`` and of the attempts ``retry_tasks`` grants."""
MAX_INT = 2**31 - 1  # PostgreSQL integer

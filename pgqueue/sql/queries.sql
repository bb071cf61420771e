-- Every runtime statement of pgqueue. Each starts with "-- name: NAME" and a one-line
-- description; parameters are named (%(name)s); the schema placeholder is the validated name.

-- name: push_task
-- Insert one task; a (kind, external_key) that exists inserts nothing and returns no row.
WITH inserted AS (
    INSERT INTO __schema__.tasks
        (kind, payload, external_key, attempts_left, max_attempts, delayed_till)
    VALUES (%(kind)s, %(payload)s::jsonb, %(external_key)s, %(max_attempts)s, %(max_attempts)s,
            now() + make_interval(secs => %(delay)s))
    ON CONFLICT (kind, external_key) WHERE external_key IS NOT NULL DO NOTHING
    RETURNING id, kind, delayed_till
)
SELECT id, CASE WHEN delayed_till <= now() THEN pg_notify(%(channel)s, 'p:' || kind) END
FROM inserted;

-- name: push_keyless_task
-- Insert one task without an external key (nothing can conflict, so no ON CONFLICT check).
INSERT INTO __schema__.tasks (kind, payload, attempts_left, max_attempts, delayed_till)
VALUES (%(kind)s, %(payload)s::jsonb, %(max_attempts)s, %(max_attempts)s,
        now() + make_interval(secs => %(delay)s))
RETURNING id, CASE WHEN %(delay)s <= 0 THEN pg_notify(%(channel)s, 'p:' || kind) END;

-- name: push_tasks
-- Insert tasks given as one JSON array of [kind, payload, external_key, max_attempts]; a
-- (kind, external_key) that exists (or repeats in the batch) inserts nothing. Returns one row
-- per input position with the new id, or NULL for a duplicate.
WITH input AS (
    SELECT i.ord,
           nextval('__schema__.tasks_id_seq'::regclass) AS id,
           i.t ->> 0 AS kind,
           nullif(i.t -> 1, 'null'::jsonb) AS payload,
           i.t ->> 2 AS external_key,
           (i.t ->> 3)::int AS max_attempts
    FROM jsonb_array_elements(%(tasks)s::jsonb) WITH ORDINALITY AS i(t, ord)
), inserted AS (
    INSERT INTO __schema__.tasks
        (id, kind, payload, external_key, attempts_left, max_attempts, delayed_till)
    SELECT id, kind, payload, external_key, max_attempts, max_attempts,
           now() + make_interval(secs => %(delay)s)
    FROM input
    ORDER BY ord
    ON CONFLICT (kind, external_key) WHERE external_key IS NOT NULL DO NOTHING
    RETURNING id, kind
), notified AS (
    SELECT pg_notify(%(channel)s, 'p:' || kind)
    FROM (SELECT DISTINCT kind FROM inserted) AS due_kinds
    WHERE %(delay)s <= 0
)
SELECT input.ord, inserted.id
FROM input
LEFT JOIN inserted ON inserted.id = input.id
CROSS JOIN (SELECT count(*) FROM notified) AS n
ORDER BY input.ord;

-- name: push_keyless_tasks
-- Insert tasks without external keys, given as in push_tasks; nothing can conflict, so there is
-- no ON CONFLICT check (and no speculative insertion). Returns (position, new id) per input.
WITH input AS MATERIALIZED (
    SELECT i.ord, nextval('__schema__.tasks_id_seq'::regclass) AS id, i.t
    FROM jsonb_array_elements(%(tasks)s::jsonb) WITH ORDINALITY AS i(t, ord)
), inserted AS (
    INSERT INTO __schema__.tasks
        (id, kind, payload, attempts_left, max_attempts, delayed_till)
    SELECT id, t ->> 0, nullif(t -> 1, 'null'::jsonb), (t ->> 3)::int, (t ->> 3)::int,
           now() + make_interval(secs => %(delay)s)
    FROM input
    ORDER BY ord
    RETURNING kind
), notified AS (
    SELECT pg_notify(%(channel)s, 'p:' || kind)
    FROM (SELECT DISTINCT kind FROM inserted) AS due_kinds
    WHERE %(delay)s <= 0
)
SELECT input.ord, input.id
FROM input
CROSS JOIN (SELECT count(*) FROM notified) AS n
ORDER BY input.ord;

-- name: lock_kind_capacity
-- Serialise pushes of one capped kind until the transaction ends (max_pending is exact).
SELECT pg_advisory_xact_lock(hashtextextended(%(lock_key)s, 0));

-- name: count_pending_tasks
-- Count the kind's non-terminal tasks that count against max_pending.
SELECT count(*)
FROM __schema__.tasks
WHERE kind = %(kind)s
  AND (status IN ('new', 'must_retry')
       OR (status = 'no_attempts_left' AND claim_token IS NOT NULL AND delayed_till > now()));

-- name: claim_due_tasks
-- Claim up to LIMIT due tasks of a kind: consume an attempt, lease the row, hand out a token.
WITH due AS (
    SELECT id, claim_token AS previous_token
    FROM __schema__.tasks
    WHERE kind = %(kind)s
      AND status IN ('new', 'must_retry')
      AND delayed_till <= now()
    ORDER BY delayed_till
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE __schema__.tasks AS t
SET status = CASE WHEN t.attempts_left <= 1 THEN 'no_attempts_left'
                  ELSE 'must_retry' END::__schema__.task_status,
    attempts_left = greatest(t.attempts_left - 1, 0),
    attempts_elapsed = t.attempts_elapsed + 1,
    delayed_till = now() + make_interval(secs => %(lease)s),
    claim_token = gen_random_uuid(),
    started_at = now(),
    updated_at = now()
FROM due
WHERE t.id = due.id
RETURNING t.id, t.payload::text, t.external_key, t.attempts_elapsed, t.attempts_left,
          t.max_attempts, t.claim_token::text, t.messages, t.started_at,
          due.previous_token IS NOT NULL AS lease_lost;

-- name: record_outcomes
-- Apply attempt results given as aligned arrays; only rows still holding the claim's token change.
UPDATE __schema__.tasks AS t
SET status = r.status::__schema__.task_status,
    attempts_left = CASE WHEN r.status = 'no_attempts_left' THEN 0 ELSE t.attempts_left END,
    delayed_till = now() + make_interval(secs => r.delay),
    claim_token = NULL,
    messages = CASE
        WHEN r.error IS NULL THEN t.messages
        WHEN r.keep <= 0 THEN '{}'::text[]
        ELSE (t.messages || r.error)[greatest(1, cardinality(t.messages) + 2 - r.keep):]
    END,
    finished_at = CASE WHEN r.status IN ('succeeded', 'cancelled') THEN now() END,
    updated_at = now()
FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[], %(statuses)s::text[],
            %(delays)s::float8[], %(errors)s::text[], %(keeps)s::int[])
     AS r(id, token, status, delay, error, keep)
WHERE t.id = ANY (%(ids)s::bigint[]) AND t.id = r.id AND t.claim_token = r.token
RETURNING t.id;

-- name: delete_finished_tasks
-- Delete tasks that finished with a retention of zero; only rows still holding the claim's token.
-- Tokens are unique per claim, so matching the id list and the token list separately is exact,
-- and it lets even a generic plan use the primary key. The lists arrive as array literals typed
-- by their casts, so each is parsed once (a cast from text would be re-parsed per row).
DELETE FROM __schema__.tasks AS t
WHERE t.id = ANY (%(ids)s::bigint[]) AND t.claim_token = ANY (%(tokens)s::uuid[])
RETURNING t.id;

-- name: release_claims
-- Hand claimed tasks back at once with the attempt refunded (stop in abort mode).
UPDATE __schema__.tasks AS t
SET status = CASE WHEN t.attempts_elapsed <= 1 THEN 'new'
                  ELSE 'must_retry' END::__schema__.task_status,
    attempts_left = t.attempts_left + 1,
    attempts_elapsed = greatest(t.attempts_elapsed - 1, 0),
    delayed_till = now(),
    claim_token = NULL,
    updated_at = now()
FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS r(id, token)
WHERE t.id = r.id AND t.claim_token = r.token
RETURNING t.id, t.kind;

-- name: notify_kinds
-- Wake the workers of the given kinds.
SELECT pg_notify(%(channel)s, 'p:' || kind) FROM unnest(%(kinds)s::text[]) AS k(kind);

-- name: cancel_task_by_key
-- Cancel the waiting or running task of (kind, external_key); tell a running one's worker.
WITH target AS (
    SELECT id, claim_token IS NOT NULL AND delayed_till > now() AS was_running
    FROM __schema__.tasks
    WHERE kind = %(kind)s AND external_key = %(external_key)s
      AND (status IN ('new', 'must_retry')
           OR (status = 'no_attempts_left' AND claim_token IS NOT NULL))
    FOR NO KEY UPDATE
), cancelled AS (
    UPDATE __schema__.tasks AS t
    SET status = 'cancelled', claim_token = NULL, finished_at = now(), updated_at = now()
    FROM target
    WHERE t.id = target.id
    RETURNING t.id, target.was_running
)
SELECT id, was_running,
       CASE WHEN was_running THEN pg_notify(%(channel)s, 'c:' || id::text) END
FROM cancelled;

-- name: retry_tasks
-- Give exhausted tasks of a kind fresh attempts (oldest first) and make them due now.
WITH exhausted AS (
    SELECT id
    FROM __schema__.tasks
    WHERE kind = %(kind)s AND status = 'no_attempts_left'
      AND (claim_token IS NULL OR delayed_till <= now())
    ORDER BY updated_at
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
), revived AS (
    UPDATE __schema__.tasks AS t
    SET status = 'must_retry', attempts_left = %(attempts)s,
        max_attempts = t.attempts_elapsed + %(attempts)s,
        delayed_till = now(), claim_token = NULL, updated_at = now()
    FROM exhausted
    WHERE t.id = exhausted.id
    RETURNING t.id
)
SELECT count(*), CASE WHEN count(*) > 0 THEN pg_notify(%(channel)s, 'p:' || %(kind)s) END
FROM revived;

-- name: get_task
-- Read one task by id, with its derived status.
SELECT id, kind, payload::text, external_key, status::text,
       claim_token IS NOT NULL AND delayed_till > now() AS processing,
       attempts_elapsed, attempts_left, max_attempts, messages, delayed_till,
       created_at, updated_at, started_at, finished_at
FROM __schema__.tasks
WHERE id = %(id)s;

-- name: register_kind_row
-- Make sure the kind has its maintenance row.
INSERT INTO __schema__.kinds (kind) VALUES (%(kind)s) ON CONFLICT (kind) DO NOTHING;

-- name: lock_kind_for_sweep
-- Take the kind's maintenance lock if no process holds it and the last sweep is old enough.
SELECT kind
FROM __schema__.kinds
WHERE kind = %(kind)s
  AND (swept_at IS NULL OR swept_at <= now() - make_interval(secs => %(period)s))
FOR UPDATE SKIP LOCKED;

-- name: sweep_terminal_tasks
-- Delete up to LIMIT terminal tasks of a kind that finished more than TTL seconds ago.
WITH doomed AS (
    SELECT id
    FROM __schema__.tasks
    WHERE kind = %(kind)s AND status IN ('cancelled', 'succeeded')
      AND finished_at <= now() - make_interval(secs => %(ttl)s)
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM __schema__.tasks AS t USING doomed WHERE t.id = doomed.id
RETURNING t.id;

-- name: mark_kind_swept
-- Remember when the kind was last swept, so other processes skip it for a period.
UPDATE __schema__.kinds SET swept_at = now() WHERE kind = %(kind)s;

-- name: push_periodic_task
-- Enqueue the task of a periodic slot if no process has enqueued this or a later slot yet.
WITH advanced AS (
    INSERT INTO __schema__.kinds AS k (kind, periodic_slot)
    VALUES (%(kind)s, %(slot)s)
    ON CONFLICT (kind) DO UPDATE SET periodic_slot = excluded.periodic_slot
    WHERE k.periodic_slot IS NULL OR k.periodic_slot < excluded.periodic_slot
    RETURNING kind
), inserted AS (
    INSERT INTO __schema__.tasks (kind, payload, external_key, attempts_left, max_attempts)
    SELECT kind, %(payload)s::jsonb, %(external_key)s, %(max_attempts)s, %(max_attempts)s
    FROM advanced
    ON CONFLICT (kind, external_key) WHERE external_key IS NOT NULL DO NOTHING
    RETURNING id, kind
)
SELECT id, pg_notify(%(channel)s, 'p:' || kind) FROM inserted;

-- name: database_now
-- The database clock, which every schedule follows.
SELECT now();

-- name: count_tasks_by_status
-- Count tasks per kind and (derived) status.
SELECT kind,
       CASE WHEN claim_token IS NOT NULL AND delayed_till > now() THEN 'processing'
            ELSE status::text END AS status,
       count(*)
FROM __schema__.tasks
GROUP BY 1, 2;

-- name: find_pushed_tasks
-- Tasks of a kind, optionally with one external key and a payload containing the given JSON
-- (pgqueue.testing's assertions); any status, oldest first.
SELECT id, payload::text, external_key, status::text
FROM __schema__.tasks
WHERE kind = %(kind)s
  AND (NOT %(match_key)s OR external_key = %(external_key)s::text)
  AND (NOT %(match_payload)s
       OR payload @> %(payload)s::jsonb
       OR (payload IS NULL AND %(payload)s::jsonb IS NULL))
ORDER BY id
LIMIT 100;

-- name: replica_lag
-- Whether this server is a standby, and how many seconds its data trails the primary's: 0 when
-- it streams and has replayed all it received, else the age of its last replayed commit.
SELECT pg_is_in_recovery(),
       CASE WHEN NOT pg_is_in_recovery() THEN 0.0
            WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn()
                 AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')
                 THEN 0.0
            ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 1e9)
       END::float8;

-- name: server_identity
-- The server (its system identifier) and database this connection is on: a sharded queue
-- checks with it that a caller's transaction is on the task's shard.
SELECT (SELECT system_identifier FROM pg_control_system())::text || '/' || current_database();

-- name: list_keyed_tasks
-- A page of keyed tasks after an id, by id (a sharded queue counts the rows of moved slots).
SELECT id, kind, external_key
FROM __schema__.tasks
WHERE external_key IS NOT NULL AND id > %(after)s
ORDER BY id
LIMIT %(limit)s;

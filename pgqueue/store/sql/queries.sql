-- Every runtime statement of pgqueue. Each starts with "-- name: NAME" and a one-line
-- description; parameters are named (%(name)s); the schema placeholder is the validated name.

-- name: push_task
-- Insert one task; a (kind, external_key) that exists inserts nothing and returns no row.
-- Returns the id, the notification, and the row's created_at and delayed_till.
-- A task due now notifies 'n:<due epoch>:<kind>'; one due within notify_within seconds
-- notifies 'd:<due epoch>:<kind>', so idle workers wake at its due time without polling for it.
-- The due epoch lets a worker see a task due below its claim floor (a push in a transaction
-- that began before the floor moved past the task's due time): it reads from the head then.
-- NOTIFY false: no notification (the caller wakes the workers after the commit).
WITH inserted AS (
    INSERT INTO __schema__.tasks
        (kind, payload, external_key, attempts_left, max_attempts, delayed_till, priority,
         task_group, trace_context)
    VALUES (%(kind)s, %(payload)s::jsonb, %(external_key)s, %(max_attempts)s, %(max_attempts)s,
            now() + make_interval(secs => %(delay)s), %(priority)s, %(task_group)s,
            %(trace_context)s)
    ON CONFLICT (kind, external_key) WHERE external_key IS NOT NULL AND NOT key_while_active
        DO NOTHING
    RETURNING id, kind, delayed_till, created_at
)
SELECT id,
       CASE WHEN NOT %(notify)s::boolean THEN NULL
            WHEN delayed_till <= now()
            THEN pg_notify(%(channel)s,
                           'n:' || extract(epoch FROM delayed_till)::text || ':' || kind)
            WHEN %(delay)s::float8 <= %(notify_within)s::float8
            THEN pg_notify(%(channel)s, 'd:' || extract(epoch FROM delayed_till)::text || ':' || kind)
       END,
       created_at, delayed_till
FROM inserted;

-- name: push_keyless_task
-- Insert one task without an external key (nothing can conflict, so no ON CONFLICT check);
-- notifies as push_task does.
INSERT INTO __schema__.tasks
    (kind, payload, attempts_left, max_attempts, delayed_till, priority, task_group,
     trace_context)
VALUES (%(kind)s, %(payload)s::jsonb, %(max_attempts)s, %(max_attempts)s,
        now() + make_interval(secs => %(delay)s), %(priority)s, %(task_group)s,
        %(trace_context)s)
RETURNING id,
          CASE WHEN NOT %(notify)s::boolean THEN NULL
               WHEN %(delay)s::float8 <= 0
               THEN pg_notify(%(channel)s,
                              'n:' || extract(epoch FROM delayed_till)::text || ':' || kind)
               WHEN %(delay)s::float8 <= %(notify_within)s::float8
               THEN pg_notify(%(channel)s,
                              'd:' || extract(epoch FROM delayed_till)::text || ':' || kind)
          END,
          created_at, delayed_till;

-- name: push_tasks
-- Insert tasks given as one JSON array of [kind, payload, external_key, max_attempts,
-- priority, group, trace_context]; a
-- (kind, external_key) that exists (or repeats in the batch) inserts nothing. Returns one row
-- per input position with the new id, or NULL for a duplicate; the first row also carries the
-- created_at and delayed_till every inserted row got (one now() per transaction). Notifies once
-- per kind, as push_task does.
WITH input AS (
    SELECT i.ord,
           nextval('__schema__.tasks_id_seq'::regclass) AS id,
           i.t ->> 0 AS kind,
           nullif(i.t -> 1, 'null'::jsonb) AS payload,
           i.t ->> 2 AS external_key,
           (i.t ->> 3)::int AS max_attempts,
           (i.t ->> 4)::smallint AS priority,
           i.t ->> 5 AS task_group,
           i.t ->> 6 AS trace_context
    FROM jsonb_array_elements(%(tasks)s::jsonb) WITH ORDINALITY AS i(t, ord)
), inserted AS (
    INSERT INTO __schema__.tasks
        (id, kind, payload, external_key, attempts_left, max_attempts, delayed_till, priority,
         task_group, trace_context)
    SELECT id, kind, payload, external_key, max_attempts, max_attempts,
           now() + make_interval(secs => %(delay)s), priority, task_group, trace_context
    FROM input
    ORDER BY ord
    ON CONFLICT (kind, external_key) WHERE external_key IS NOT NULL AND NOT key_while_active
        DO NOTHING
    RETURNING id, kind
), notified AS (
    SELECT pg_notify(%(channel)s,
                     CASE WHEN %(delay)s::float8 <= 0 THEN 'n:' ELSE 'd:' END
                     || extract(epoch FROM now() + make_interval(secs => %(delay)s))::text
                     || ':' || kind)
    FROM (SELECT DISTINCT kind FROM inserted) AS due_kinds
    WHERE %(delay)s::float8 <= %(notify_within)s::float8
)
SELECT input.ord, inserted.id,
       CASE WHEN input.ord = 1 THEN now() END AS created_at,
       CASE WHEN input.ord = 1 THEN now() + make_interval(secs => %(delay)s) END AS delayed_till
FROM input
LEFT JOIN inserted ON inserted.id = input.id
CROSS JOIN (SELECT count(*) FROM notified) AS n
ORDER BY input.ord;

-- name: push_scoped_tasks
-- Insert tasks as push_tasks does, for batches with kinds whose key_scope is "while_active"
-- (element 7 of each task is true for them): their keys conflict only with open tasks (the
-- open-keys index), the others' with any task, so the conflict target is left to the indexes.
WITH input AS (
    SELECT i.ord,
           nextval('__schema__.tasks_id_seq'::regclass) AS id,
           i.t ->> 0 AS kind,
           nullif(i.t -> 1, 'null'::jsonb) AS payload,
           i.t ->> 2 AS external_key,
           (i.t ->> 3)::int AS max_attempts,
           (i.t ->> 4)::smallint AS priority,
           i.t ->> 5 AS task_group,
           i.t ->> 6 AS trace_context,
           (i.t ->> 7)::bool AS key_while_active
    FROM jsonb_array_elements(%(tasks)s::jsonb) WITH ORDINALITY AS i(t, ord)
), inserted AS (
    INSERT INTO __schema__.tasks
        (id, kind, payload, external_key, attempts_left, max_attempts, delayed_till, priority,
         task_group, trace_context, key_while_active)
    SELECT id, kind, payload, external_key, max_attempts, max_attempts,
           now() + make_interval(secs => %(delay)s), priority, task_group, trace_context,
           key_while_active
    FROM input
    ORDER BY ord
    ON CONFLICT DO NOTHING
    RETURNING id, kind
), notified AS (
    SELECT pg_notify(%(channel)s,
                     CASE WHEN %(delay)s::float8 <= 0 THEN 'n:' ELSE 'd:' END
                     || extract(epoch FROM now() + make_interval(secs => %(delay)s))::text
                     || ':' || kind)
    FROM (SELECT DISTINCT kind FROM inserted) AS due_kinds
    WHERE %(delay)s::float8 <= %(notify_within)s::float8
)
SELECT input.ord, inserted.id,
       CASE WHEN input.ord = 1 THEN now() END AS created_at,
       CASE WHEN input.ord = 1 THEN now() + make_interval(secs => %(delay)s) END AS delayed_till
FROM input
LEFT JOIN inserted ON inserted.id = input.id
CROSS JOIN (SELECT count(*) FROM notified) AS n
ORDER BY input.ord;

-- name: push_keyless_tasks
-- Insert tasks without external keys, given as in push_tasks; nothing can conflict, so there is
-- no ON CONFLICT check (and no speculative insertion). Returns (position, new id) per input,
-- and on the first row created_at and delayed_till, as push_tasks does.
WITH input AS MATERIALIZED (
    SELECT i.ord, nextval('__schema__.tasks_id_seq'::regclass) AS id, i.t
    FROM jsonb_array_elements(%(tasks)s::jsonb) WITH ORDINALITY AS i(t, ord)
), inserted AS (
    INSERT INTO __schema__.tasks
        (id, kind, payload, attempts_left, max_attempts, delayed_till, priority, task_group,
         trace_context)
    SELECT id, t ->> 0, nullif(t -> 1, 'null'::jsonb), (t ->> 3)::int, (t ->> 3)::int,
           now() + make_interval(secs => %(delay)s), (t ->> 4)::smallint, t ->> 5, t ->> 6
    FROM input
    ORDER BY ord
    RETURNING kind
), notified AS (
    SELECT pg_notify(%(channel)s,
                     CASE WHEN %(delay)s::float8 <= 0 THEN 'n:' ELSE 'd:' END
                     || extract(epoch FROM now() + make_interval(secs => %(delay)s))::text
                     || ':' || kind)
    FROM (SELECT DISTINCT kind FROM inserted) AS due_kinds
    WHERE %(delay)s::float8 <= %(notify_within)s::float8
)
SELECT input.ord, input.id,
       CASE WHEN input.ord = 1 THEN now() END AS created_at,
       CASE WHEN input.ord = 1 THEN now() + make_interval(secs => %(delay)s) END AS delayed_till
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
-- Claim up to LIMIT due tasks of an unpaused kind, highest priority first, then oldest due:
-- consume an attempt, lease the row, hand out a token. The pause check is part of the
-- statement, so no claim sees a committed pause late. Priorities come in three parts, each an
-- index range read in order: above 0 (tasks_open_priority_idx, which holds only rows with a
-- priority), 0 (tasks_open_idx), below 0; a later part runs only when the earlier ones did not
-- fill the limit, so a queue without priorities pays one probe of an empty index.
-- The update reaches its rows through the primary key, one lookup per claimed row, whatever
-- the limit and whatever plan the statement keeps: it is driven by the due rows' ids and
-- previous tokens unnested from two arrays, which the planner always takes for a few rows. (A
-- plain join to ``due`` let it hash a sequential scan of the whole table for large claims; an
-- id array beside that join let a generic plan read the whole array through the index again
-- for every claimed row, 140 ms instead of 7 for 500 rows of a 20,000-task queue.) Both arrays
-- come from one pass of one aggregate over ``due``, so they are aligned, in the order the union
-- yields its parts (high, plain, low); POSITION is that order, and the caller sorts the rows by
-- it (an UPDATE returns rows in no promised order; sorting them here would cost the server a
-- materialized copy of every row and a sort). FLOOR (NULL: none) starts the priority-0 range
-- there instead of at the index's head: the entries below the oldest due task are the dead
-- versions of tasks already claimed, which a long transaction elsewhere keeps vacuum from
-- removing; the claim loop knows where its last claim found the oldest due task. The first row
-- (position 1) carries, for it, the oldest due time among the priority-0 rows and the
-- transaction's clock; the other rows carry NULL there. Only the first row carries started_at
-- too: every row got the same now(), and a timestamp is the dearest column to send and parse
-- (about 1 µs a row, a seventh of a 500-row claim). No rows: nothing was due, or the kind
-- is paused. A workflow node's workflow column is [workflow id, node name, its parents'
-- outcomes]; NULL for a task pushed alone.
WITH due AS (
    SELECT id, previous_token, due_at
    FROM (
        SELECT * FROM (
            SELECT id, claim_token AS previous_token, NULL::timestamptz AS due_at
            FROM __schema__.tasks
            WHERE kind = %(kind)s AND status IN ('new', 'must_retry') AND priority > 0
              AND delayed_till <= now()
            ORDER BY priority DESC, delayed_till
            LIMIT %(limit)s
            FOR NO KEY UPDATE SKIP LOCKED
        ) AS high
        UNION ALL
        SELECT * FROM (
            SELECT id, claim_token AS previous_token, delayed_till AS due_at
            FROM __schema__.tasks
            WHERE kind = %(kind)s AND status IN ('new', 'must_retry') AND delayed_till <= now()
              AND delayed_till >= coalesce(%(floor)s::timestamptz, '-infinity')
              AND priority = 0
            ORDER BY delayed_till
            LIMIT %(limit)s
            FOR NO KEY UPDATE SKIP LOCKED
        ) AS plain
        UNION ALL
        SELECT * FROM (
            SELECT id, claim_token AS previous_token, NULL::timestamptz AS due_at
            FROM __schema__.tasks
            WHERE kind = %(kind)s AND status IN ('new', 'must_retry') AND priority < 0
              AND delayed_till <= now()
            ORDER BY priority DESC, delayed_till
            LIMIT %(limit)s
            FOR NO KEY UPDATE SKIP LOCKED
        ) AS low
    ) AS ranked
    WHERE NOT EXISTS (
        SELECT FROM __schema__.kinds AS k WHERE k.kind = %(kind)s AND k.paused_at IS NOT NULL
    )
    LIMIT %(limit)s
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
FROM (SELECT array_agg(id) AS ids, array_agg(previous_token) AS tokens,
             min(due_at) AS oldest_due
      FROM due) AS batch,
     unnest(batch.ids, batch.tokens) WITH ORDINALITY AS due(id, previous_token, position)
WHERE t.id = due.id
RETURNING t.id, t.payload::text AS payload, t.external_key, t.attempts_elapsed,
          t.attempts_left, t.max_attempts, t.claim_token::text AS claim_token,
          nullif(t.messages, '{}') AS messages,
          CASE WHEN due.position = 1 THEN t.started_at END AS started_at,
          due.previous_token IS NOT NULL AS lease_lost, t.snoozes,
          CASE WHEN t.workflow_id IS NOT NULL
               THEN jsonb_build_array(t.workflow_id, t.node, t.parent_results)::text END
              AS workflow,
          t.trace_context, due.position,
          CASE WHEN due.position = 1 THEN batch.oldest_due END AS oldest_due,
          CASE WHEN due.position = 1 THEN now() END AS clock;

-- name: record_outcomes
-- Apply attempt results given as aligned arrays; only rows still holding the claim's token change.
-- A 'snoozed' outcome refunds the attempt (as release_claims does) and counts the snooze.
-- The applied outcomes are added to the per-minute throughput rollup in the same statement, and
-- the ended tasks that queue.wait marked are announced: 'f:<id><status letter>,…' (s, c or n),
-- ids of one block of 150 a message. Unwaited tasks cost no announcement.
WITH updated AS (
    UPDATE __schema__.tasks AS t
    SET status = CASE WHEN r.status <> 'snoozed' THEN r.status
                      WHEN t.attempts_elapsed <= 1 THEN 'new'
                      ELSE 'must_retry' END::__schema__.task_status,
        attempts_left = CASE WHEN r.status = 'no_attempts_left' THEN 0
                             WHEN r.status = 'snoozed' THEN t.attempts_left + 1
                             ELSE t.attempts_left END,
        attempts_elapsed = CASE WHEN r.status = 'snoozed' THEN t.attempts_elapsed - 1
                                ELSE t.attempts_elapsed END,
        snoozes = CASE WHEN r.status = 'snoozed' THEN t.snoozes + 1 ELSE t.snoozes END,
        delayed_till = now() + make_interval(secs => r.delay),
        claim_token = NULL,
        messages = CASE
            WHEN r.error IS NULL THEN t.messages
            WHEN r.keep <= 0 THEN '{}'::text[]
            ELSE (t.messages || r.error)[greatest(1, cardinality(t.messages) + 2 - r.keep):]
        END,
        finished_at = CASE WHEN r.status IN ('succeeded', 'cancelled') THEN now() END,
        result = r.result::jsonb,
        updated_at = now()
    FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[], %(statuses)s::text[],
                %(delays)s::float8[], %(errors)s::text[], %(keeps)s::int[],
                %(results)s::text[])
         AS r(id, token, status, delay, error, keep, result)
    WHERE t.id = ANY (%(ids)s::bigint[]) AND t.id = r.id AND t.claim_token = r.token
    RETURNING t.id, t.kind, r.status, t.waited
), rollup AS (
    INSERT INTO __schema__.throughput AS tp (kind, minute, succeeded, failed, exhausted, cancelled)
    SELECT kind, date_trunc('minute', now()),
           count(*) FILTER (WHERE status = 'succeeded'),
           count(*) FILTER (WHERE status = 'must_retry'),
           count(*) FILTER (WHERE status = 'no_attempts_left'),
           count(*) FILTER (WHERE status = 'cancelled')
    FROM updated
    GROUP BY kind
    ORDER BY kind
    ON CONFLICT (kind, minute) DO UPDATE
    SET succeeded = tp.succeeded + excluded.succeeded,
        failed = tp.failed + excluded.failed,
        exhausted = tp.exhausted + excluded.exhausted,
        cancelled = tp.cancelled + excluded.cancelled
), announced AS (
    SELECT pg_notify(%(finished_channel)s, 'f:' || string_agg(id::text || left(status, 1), ','))
    FROM updated
    WHERE waited AND status IN ('succeeded', 'cancelled', 'no_attempts_left')
    GROUP BY id / 150
)
SELECT id FROM updated CROSS JOIN (SELECT count(*) FROM announced) AS n;

-- name: delete_finished_tasks
-- Delete tasks that finished with a retention of zero; only rows still holding the claim's token.
-- Tokens are unique per claim, so matching the id list and the token list separately is exact,
-- and it lets even a generic plan use the primary key. The lists arrive as array literals typed
-- by their casts, so each is parsed once (a cast from text would be re-parsed per row). The
-- deleted tasks' outcomes (aligned with the ids) go to the throughput rollup in the same statement.
-- The outcomes and results of waited tasks go to finished_results (mark_task_waited prunes it),
-- and their waiters hear 'F:<id><status letter in upper case>,…:<kind>'. Unwaited tasks cost
-- neither.
WITH deleted AS (
    DELETE FROM __schema__.tasks AS t
    WHERE t.id = ANY (%(ids)s::bigint[]) AND t.claim_token = ANY (%(tokens)s::uuid[])
    RETURNING t.id, t.kind, t.waited
), outcomes AS (
    SELECT deleted.id, deleted.kind, r.status
    FROM deleted
    JOIN unnest(%(ids)s::bigint[], %(statuses)s::text[]) AS r(id, status) ON r.id = deleted.id
), waited_outcomes AS (
    -- Apart from outcomes, which stays a single reference (inlined): the common batch, with no
    -- waited task, pays only for an empty join here.
    SELECT deleted.id, deleted.kind, r.status, r.result
    FROM deleted
    JOIN unnest(%(ids)s::bigint[], %(statuses)s::text[], %(results)s::text[])
         AS r(id, status, result) ON r.id = deleted.id
    WHERE deleted.waited
), rollup AS (
    INSERT INTO __schema__.throughput AS tp (kind, minute, succeeded, failed, exhausted, cancelled)
    SELECT kind, date_trunc('minute', now()),
           count(*) FILTER (WHERE status = 'succeeded'), 0, 0,
           count(*) FILTER (WHERE status = 'cancelled')
    FROM outcomes
    GROUP BY kind
    ORDER BY kind
    ON CONFLICT (kind, minute) DO UPDATE
    SET succeeded = tp.succeeded + excluded.succeeded,
        cancelled = tp.cancelled + excluded.cancelled
), kept_results AS (
    INSERT INTO __schema__.finished_results (id, kind, status, result)
    SELECT id, kind, status, result::jsonb FROM waited_outcomes
    ON CONFLICT (id) DO UPDATE
    SET status = excluded.status, result = excluded.result, finished_at = now()
), announced AS (
    SELECT pg_notify(%(finished_channel)s,
                     'F:' || string_agg(id::text || upper(left(status, 1)), ',') || ':' || kind)
    FROM waited_outcomes
    GROUP BY kind, id / 150
)
SELECT id FROM deleted CROSS JOIN (SELECT count(*) FROM announced) AS n;

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

-- name: poll_due_kinds
-- Which of the given kinds have a task due now, in how many seconds the next open task of any
-- of them falls due and of which kind (NULL: none), with the database clock as epoch seconds,
-- and per kind (in the order given) the due time of its oldest open task from its FLOOR on
-- (the claim loop's, see claim_due_tasks; NULL: from the index's head) and the clock itself.
-- Two probes of the open-tasks index per kind; always one row. Both are ordered by the index's
-- own order with LIMIT 1, so each reads one entry: an EXISTS let the planner bet on a sequential
-- scan finding a due row early, which reads the whole table when the due rows are at its end.
SELECT extract(epoch FROM now())::float8 AS clock,
       coalesce(array_agg(p.kind) FILTER (WHERE p.oldest <= now()), '{}'::text[]) AS due_kinds,
       extract(epoch FROM min(p.next_due) - now())::float8 AS next_due_in,
       (array_agg(p.kind ORDER BY p.next_due) FILTER (WHERE p.next_due IS NOT NULL))[1]
           AS next_kind,
       array_agg(p.oldest ORDER BY p.ord) AS oldest,
       now() AS now
FROM (
    SELECT k.kind, k.ord,
           (SELECT t.delayed_till
            FROM __schema__.tasks AS t
            WHERE t.kind = k.kind AND t.status IN ('new', 'must_retry')
              AND t.delayed_till >= coalesce(k.floor, '-infinity')
            ORDER BY t.delayed_till
            LIMIT 1) AS oldest,
           (SELECT t.delayed_till
            FROM __schema__.tasks AS t
            WHERE t.kind = k.kind AND t.status IN ('new', 'must_retry')
              AND t.delayed_till > now()
            ORDER BY t.delayed_till
            LIMIT 1) AS next_due
    FROM unnest(%(kinds)s::text[], %(floors)s::timestamptz[]) WITH ORDINALITY
        AS k(kind, floor, ord)
) AS p;

-- name: find_sweepable_kinds
-- Which of the given kinds (with their terminal TTLs and throughput windows in seconds) hold a
-- terminal task older than the TTL or a throughput row older than the window: one probe of the
-- terminal-tasks index and one of the rollup's primary key per kind.
SELECT k.kind
FROM unnest(%(kinds)s::text[], %(ttls)s::float8[], %(windows)s::float8[]) AS k(kind, ttl, win)
WHERE EXISTS (
    SELECT FROM __schema__.tasks AS t
    WHERE t.kind = k.kind AND t.status IN ('cancelled', 'succeeded')
      AND t.finished_at <= now() - make_interval(secs => k.ttl)
) OR EXISTS (
    SELECT FROM __schema__.throughput AS p
    WHERE p.kind = k.kind AND p.minute < now() - make_interval(secs => k.win)
);

-- name: notify_kinds
-- Wake the workers of the given kinds.
SELECT pg_notify(%(channel)s, 'p:' || kind) FROM unnest(%(kinds)s::text[]) AS k(kind);

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
    RETURNING t.id, t.children IS NOT NULL AS has_children
)
SELECT count(*),
       CASE WHEN count(*) > 0
            THEN pg_notify(%(channel)s, 'n:' || extract(epoch FROM now())::text || ':' || %(kind)s)
       END,
       coalesce(array_agg(id) FILTER (WHERE has_children), '{}'::bigint[])
FROM revived;

-- name: retry_task
-- Make one task that is not running due now. An ended one (no_attempts_left, cancelled,
-- succeeded) becomes must_retry with fresh attempts; a waiting one keeps its attempts. A
-- blocked workflow node waits on its parents: it is left alone. The last column tells an
-- ended workflow node with children (they are reopened next).
WITH target AS (
    SELECT id, status IN ('no_attempts_left', 'cancelled', 'succeeded') AS ended
    FROM __schema__.tasks
    WHERE id = %(id)s AND (claim_token IS NULL OR delayed_till <= now()) AND status <> 'blocked'
    FOR NO KEY UPDATE
), revived AS (
    UPDATE __schema__.tasks AS t
    SET status = CASE WHEN target.ended THEN 'must_retry' ELSE t.status END,
        attempts_left = CASE WHEN target.ended THEN %(attempts)s ELSE t.attempts_left END,
        max_attempts = CASE WHEN target.ended THEN t.attempts_elapsed + %(attempts)s
                            ELSE t.max_attempts END,
        finished_at = CASE WHEN target.ended THEN NULL ELSE t.finished_at END,
        delayed_till = now(), claim_token = NULL, updated_at = now()
    FROM target
    WHERE t.id = target.id
    RETURNING t.id, t.kind, target.ended AND t.children IS NOT NULL AS reopened
)
SELECT id, pg_notify(%(channel)s, 'n:' || extract(epoch FROM now())::text || ':' || kind),
       reopened
FROM revived;

-- name: get_task
-- Read one task by id, with its derived status.
SELECT id, kind, payload::text, external_key, status::text,
       claim_token IS NOT NULL AND delayed_till > now() AS processing,
       attempts_elapsed, attempts_left, max_attempts, messages, delayed_till,
       created_at, updated_at, started_at, finished_at, result::text, snoozes,
       workflow_id::text, node, parents, children
FROM __schema__.tasks
WHERE id = %(id)s;

-- name: get_tasks
-- Read tasks by id, with their derived status (the waiters of ended tasks).
SELECT id, kind, payload::text, external_key, status::text,
       claim_token IS NOT NULL AND delayed_till > now() AS processing,
       attempts_elapsed, attempts_left, max_attempts, messages, delayed_till,
       created_at, updated_at, started_at, finished_at, result::text, snoozes
FROM __schema__.tasks
WHERE id = ANY (%(ids)s::bigint[]);

-- name: get_finished_results
-- The kept outcomes of waited tasks that were deleted as they ended (a retention of 0).
SELECT id, kind, status, result::text
FROM __schema__.finished_results
WHERE id = ANY (%(ids)s::bigint[]);

-- name: mark_task_waited
-- Mark a task as waited on (its end is then announced) and read it, in one statement: an end
-- recorded before it is in the row read, one recorded after it sees the mark. Also deletes
-- up to 100 outcomes kept in finished_results for over five minutes (only waits make them).
-- The mark locks the row until it commits, and a claim meeting it meanwhile skips the row
-- (SKIP LOCKED): with nothing else due, no claim would come again before the next poll, and
-- the floor the skipping claim leaves may lie above the task. So a mark of a task still
-- waiting wakes its kind's workers with 'w:<kind>' (claim, reading from the index's head).
WITH pruned AS (
    DELETE FROM __schema__.finished_results
    WHERE id IN (SELECT id FROM __schema__.finished_results
                 WHERE finished_at < now() - interval '5 minutes'
                 ORDER BY finished_at
                 LIMIT 100
                 FOR UPDATE SKIP LOCKED)
), marked AS (
    UPDATE __schema__.tasks
    SET waited = true
    WHERE id = %(id)s
    RETURNING id, kind, payload::text, external_key, status::text AS status,
              claim_token IS NOT NULL AND delayed_till > now() AS processing,
              attempts_elapsed, attempts_left, max_attempts, messages, delayed_till,
              created_at, updated_at, started_at, finished_at, result::text, snoozes
), woken AS (
    SELECT pg_notify(%(channel)s, 'w:' || kind)
    FROM marked
    WHERE status IN ('new', 'must_retry') AND NOT processing
)
SELECT marked.* FROM marked CROSS JOIN (SELECT count(*) FROM woken) AS w;

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
-- Enqueue the task of a periodic slot (at the kind's default priority) if no process has
-- enqueued this or a later slot yet.
WITH advanced AS (
    INSERT INTO __schema__.kinds AS k (kind, periodic_slot)
    VALUES (%(kind)s, %(slot)s)
    ON CONFLICT (kind) DO UPDATE SET periodic_slot = excluded.periodic_slot
    WHERE k.periodic_slot IS NULL OR k.periodic_slot < excluded.periodic_slot
    RETURNING kind
), inserted AS (
    INSERT INTO __schema__.tasks
        (kind, payload, external_key, attempts_left, max_attempts, priority)
    SELECT kind, %(payload)s::jsonb, %(external_key)s, %(max_attempts)s, %(max_attempts)s,
           %(priority)s
    FROM advanced
    ON CONFLICT (kind, external_key) WHERE external_key IS NOT NULL AND NOT key_while_active
        DO NOTHING
    RETURNING id, kind
)
SELECT id, pg_notify(%(channel)s, 'p:' || kind) FROM inserted;

-- name: database_now
-- The database clock, which every schedule follows.
SELECT now();

-- name: read_table_health
-- The tasks table's upkeep: dead and live rows (the statistics views), the heap's size and the
-- size with indexes, whether autovacuum runs for it (the server's setting and the table's own),
-- the dead rows at which autovacuum starts on it (its own settings, else the server's), and
-- when it was last vacuumed.
WITH settings AS (
    SELECT c.oid,
           coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions)
                     WHERE option_name = 'autovacuum_enabled'), 'on')::boolean AS enabled,
           coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions)
                     WHERE option_name = 'autovacuum_vacuum_threshold'),
                    current_setting('autovacuum_vacuum_threshold'))::float8 AS threshold,
           coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions)
                     WHERE option_name = 'autovacuum_vacuum_scale_factor'),
                    current_setting('autovacuum_vacuum_scale_factor'))::float8 AS scale
    FROM pg_class AS c
    WHERE c.oid = '__schema__.tasks'::regclass
)
SELECT coalesce(s.n_dead_tup, 0), coalesce(s.n_live_tup, 0),
       pg_relation_size(o.oid), pg_total_relation_size(o.oid),
       current_setting('autovacuum')::boolean, o.enabled,
       o.threshold + o.scale * coalesce(s.n_live_tup, 0),
       greatest(s.last_autovacuum, s.last_vacuum)
FROM settings AS o
LEFT JOIN pg_stat_user_tables AS s ON s.relid = o.oid;

-- name: tasks_need_statistics
-- Whether the planner's statistics of the tasks table are missing, no longer describe its size,
-- or, where autovacuum does not serve the table, are more than a minute and a thousand changes
-- old: the caller then runs ANALYZE (in this transaction, which holds the advisory lock, so one
-- process of the fleet does). Prepared statements keep the plan they were given while the
-- statistics do not change: plans made while the table was nearly empty (a new table, or one
-- that vacuum has just emptied and truncated, which sets its statistics to no rows and no
-- pages) read it by sequential scans, and are made again only once the statistics change. So
-- a table that grew to eight times the pages its statistics were taken on (and past 128 pages)
-- is analyzed too. The first column says why, NULL when nothing is to be done.
WITH table_stats AS (
    SELECT s.n_mod_since_analyze AS changes,
           greatest(s.last_analyze, s.last_autoanalyze) AS analyzed,
           c.relpages AS counted_pages,
           pg_relation_size(c.oid) / current_setting('block_size')::int AS pages,
           current_setting('autovacuum')::boolean
           AND coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions)
                         WHERE option_name = 'autovacuum_enabled'), 'on')::boolean AS served
    FROM pg_class AS c
    JOIN pg_stat_user_tables AS s ON s.relid = c.oid
    WHERE c.oid = '__schema__.tasks'::regclass
)
SELECT CASE WHEN analyzed IS NULL THEN 'never analyzed'
            WHEN pages >= 8 * greatest(counted_pages, 16)
                THEN 'grew from ' || counted_pages || ' to ' || pages || ' pages'
            ELSE 'not analyzed by autovacuum' END
FROM table_stats
WHERE changes >= %(min_changes)s
  AND (analyzed IS NULL
       OR pages >= 8 * greatest(counted_pages, 16)
       OR (NOT served AND analyzed < now() - interval '1 minute'))
  AND pg_try_advisory_xact_lock(hashtextextended('pgqueue analyze __schema__.tasks', 0));

-- name: analyze_tasks
-- The planner's statistics of the tasks table, taken afresh: its size and the columns claims,
-- polls and sweeps filter on (not the payloads and results, whose statistics cost the most and
-- serve no pgqueue statement; autovacuum's own ANALYZE covers every column).
ANALYZE __schema__.tasks (kind, status, priority, delayed_till, task_group, updated_at,
                          finished_at, workflow_id);

-- name: count_tasks_by_status
-- Count tasks per kind and (derived) status.
SELECT kind,
       CASE WHEN claim_token IS NOT NULL AND delayed_till > now() THEN 'processing'
            ELSE status::text END AS status,
       count(*)
FROM __schema__.tasks
GROUP BY 1, 2;

-- name: schema_objects
-- Start-up check: whether pgqueue's tasks table and its own Alembic version table exist.
SELECT to_regclass('__schema__.tasks') IS NOT NULL,
       to_regclass('__schema__.pgqueue_alembic_version') IS NOT NULL;

-- name: schema_revision
-- Start-up check: the pgqueue revision `pgqueue migrate` recorded in the schema.
SELECT version_num FROM __schema__.pgqueue_alembic_version;

-- name: cancel_task
-- Cancel the waiting or running task with this id, or (id NULL) the newest task holding (kind,
-- external_key); tell a running one's worker and count it in the throughput rollup (a running
-- attempt's own result no longer applies: its claim token is gone). A probe of a unique
-- index or two.
WITH target AS (
    SELECT id, claim_token IS NOT NULL AND delayed_till > now() AS was_running
    FROM __schema__.tasks
    WHERE id = coalesce(%(id)s::bigint, (
              SELECT id FROM __schema__.tasks
              WHERE kind = %(kind)s::text AND external_key = %(external_key)s::text
              ORDER BY id DESC LIMIT 1))
      AND (status IN ('new', 'must_retry', 'blocked')
           OR (status = 'no_attempts_left' AND claim_token IS NOT NULL))
    FOR NO KEY UPDATE
), cancelled AS (
    UPDATE __schema__.tasks AS t
    SET status = 'cancelled', claim_token = NULL, finished_at = now(), updated_at = now()
    FROM target
    WHERE t.id = target.id
    RETURNING t.id, t.kind, target.was_running, t.waited, t.children IS NOT NULL AS has_children
), rollup AS (
    INSERT INTO __schema__.throughput AS tp (kind, minute, succeeded, failed, exhausted, cancelled)
    SELECT kind, date_trunc('minute', now()), 0, 0, 0, count(*)
    FROM cancelled
    GROUP BY kind
    ON CONFLICT (kind, minute) DO UPDATE
    SET cancelled = tp.cancelled + excluded.cancelled
)
SELECT id, was_running,
       CASE WHEN was_running THEN pg_notify(%(channel)s, 'c:' || id::text) END,
       CASE WHEN waited THEN pg_notify(%(finished_channel)s, 'f:' || id::text || 'c') END,
       has_children
FROM cancelled;

-- name: get_task_id_by_key
-- The id of the task holding (kind, external_key), if one exists (the newest, for kinds whose
-- keys repeat once their tasks ended).
SELECT id FROM __schema__.tasks WHERE kind = %(kind)s AND external_key = %(external_key)s
ORDER BY id DESC LIMIT 1;

-- name: prune_throughput
-- Delete a kind's rollup rows older than the window (seconds).
DELETE FROM __schema__.throughput
WHERE kind = %(kind)s AND minute < now() - make_interval(secs => %(window)s);

-- name: read_throughput
-- The rollup rows of the last MINUTES minutes (the current one included), optionally of one kind.
SELECT kind, minute, succeeded, failed, exhausted, cancelled
FROM __schema__.throughput
WHERE minute > date_trunc('minute', now()) - make_interval(mins => %(minutes)s)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
ORDER BY minute, kind;

-- name: pause_kind
-- Pause a kind known to this process or to the database (``kind_exists``, spliced in); tell every
-- worker at once.
WITH known AS (
    SELECT %(kind)s::text AS kind
    WHERE %(registered)s
       OR (__query:kind_exists__)
), paused AS (
    INSERT INTO __schema__.kinds AS k (kind, paused_at)
    SELECT kind, now() FROM known
    ON CONFLICT (kind) DO UPDATE SET paused_at = coalesce(k.paused_at, excluded.paused_at)
    RETURNING kind
)
SELECT kind, pg_notify(%(channel)s, 'pause:' || kind) FROM paused;

-- name: resume_kind
-- Resume a kind known to this process or to the database (``kind_exists``, spliced in); wake
-- every worker of it at once.
WITH known AS (
    SELECT %(kind)s::text AS kind
    WHERE %(registered)s
       OR (__query:kind_exists__)
), resumed AS (
    INSERT INTO __schema__.kinds AS k (kind)
    SELECT kind FROM known
    ON CONFLICT (kind) DO UPDATE SET paused_at = NULL
    RETURNING kind
)
SELECT kind, pg_notify(%(channel)s, 'resume:' || kind), pg_notify(%(channel)s, 'p:' || kind)
FROM resumed;

-- name: kind_exists
-- Whether the database knows a kind (a kinds row or any task). Every task is in one of the three
-- partial indexes (open, finished, out of attempts): each probe reads at most one entry of one,
-- in its own order. (A bare EXISTS on the table was planned as a sequential scan of all of it
-- for a kind with no task.) pause_kind and resume_kind splice this statement in.
SELECT EXISTS (SELECT FROM __schema__.kinds WHERE kind = %(kind)s::text)
    OR (
        coalesce(
            (SELECT true FROM __schema__.tasks
             WHERE kind = %(kind)s::text AND status IN ('new', 'must_retry')
             ORDER BY delayed_till LIMIT 1),
            (SELECT true FROM __schema__.tasks
             WHERE kind = %(kind)s::text AND status IN ('cancelled', 'succeeded')
             ORDER BY finished_at LIMIT 1),
            (SELECT true FROM __schema__.tasks
             WHERE kind = %(kind)s::text AND status = 'no_attempts_left'
             ORDER BY updated_at LIMIT 1),
            false
        )
    );

-- name: kind_overview
-- Per kind and status: exact counts of open tasks (through the partial indexes), due tasks and
-- the age of the oldest due one; blocked workflow nodes counted exactly (through their partial
-- index, never due); finished tasks counted exactly in a small table and estimated from the
-- (kind, status) statistics in a large one; the paused flag. One row per kind x status.
WITH size AS (
    SELECT greatest(c.reltuples, 0)::float8 AS rows
    FROM pg_class AS c
    WHERE c.oid = '__schema__.tasks'::regclass
), open_tasks AS (
    SELECT kind, status, claim_token, delayed_till
    FROM __schema__.tasks
    WHERE status IN ('new', 'must_retry')
    UNION ALL
    SELECT kind, status, claim_token, delayed_till
    FROM __schema__.tasks
    WHERE status = 'no_attempts_left'
), open_groups AS (
    SELECT kind, status, claim_token IS NOT NULL AND delayed_till > now() AS processing,
           count(*) AS tasks,
           count(*) FILTER (WHERE delayed_till <= now()) AS due,
           min(delayed_till) AS oldest
    FROM open_tasks
    GROUP BY 1, 2, 3
), open_counts AS (
    SELECT kind, CASE WHEN processing THEN 'processing' ELSE status::text END AS status,
           tasks,
           CASE WHEN status <> 'no_attempts_left' AND NOT processing THEN due ELSE 0 END AS due,
           CASE WHEN status <> 'no_attempts_left' AND NOT processing AND due > 0
                THEN oldest END AS oldest_due
    FROM open_groups
), blocked AS (
    -- An index-only scan of tasks_blocked_idx: only the blocked rows have an entry.
    SELECT kind, 'blocked'::text AS status, count(*) AS tasks
    FROM __schema__.tasks
    WHERE status = 'blocked'
    GROUP BY 1
), exact_finished AS (
    -- Ordered like tasks_terminal_idx and limited: a plain index scan, never a parallel one
    -- (whose workers would start even when the size check skips the scan).
    SELECT kind, status::text AS status, count(*) AS tasks
    FROM (
        SELECT kind, status
        FROM __schema__.tasks
        WHERE status IN ('cancelled', 'succeeded')
          AND (SELECT rows FROM size) < %(exact_below)s
        ORDER BY kind, finished_at
        LIMIT %(exact_below)s
    ) AS finished
    GROUP BY 1, 2
), estimated_finished AS (
    SELECT s.most_common_vals[i][1] AS kind, s.most_common_vals[i][2] AS status,
           round(s.most_common_freqs[i] * (SELECT rows FROM size))::bigint AS tasks
    FROM pg_stats_ext AS s, generate_subscripts(s.most_common_freqs, 1) AS i
    WHERE s.statistics_schemaname = %(schema)s
      AND s.statistics_name = 'tasks_kind_status_stats'
      AND NOT s.inherited
      AND (SELECT rows FROM size) >= %(exact_below)s
)
SELECT kind, status, tasks, due, extract(epoch FROM now() - oldest_due)::float8, false,
       NULL::timestamptz
FROM open_counts
UNION ALL
SELECT kind, status, tasks, 0, NULL, false, NULL FROM blocked
UNION ALL
SELECT kind, status, tasks, 0, NULL, false, NULL FROM exact_finished
UNION ALL
SELECT kind, status, tasks, 0, NULL, true, NULL
FROM estimated_finished
WHERE status IN ('cancelled', 'succeeded')
UNION ALL
SELECT kind, NULL, 0, 0, NULL, false, paused_at FROM __schema__.kinds;

-- name: list_tasks
-- A page of tasks, newest first, below the cursor id, filtered by kind, derived status and key
-- prefix.
SELECT id, kind, payload::text, external_key, status::text,
       claim_token IS NOT NULL AND delayed_till > now() AS processing,
       attempts_elapsed, attempts_left, max_attempts, messages, delayed_till,
       created_at, updated_at, started_at, finished_at, result::text, snoozes
FROM __schema__.tasks
WHERE (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(key_prefix)s::text IS NULL OR starts_with(external_key, %(key_prefix)s::text))
  AND (%(status)s::text IS NULL
       OR CASE WHEN claim_token IS NOT NULL AND delayed_till > now() THEN 'processing'
               ELSE status::text END = %(status)s::text)
  -- __status_literal__ (operations.list_tasks writes the stored status here: partial indexes)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: list_tasks_by_payload
-- Like list_tasks, and the payload contains a JSON value; only the SCAN newest matching rows
-- below the cursor are searched, so the cost is bounded.
SELECT id, kind, payload, external_key, status, processing, attempts_elapsed, attempts_left,
       max_attempts, messages, delayed_till, created_at, updated_at, started_at, finished_at,
       result, snoozes
FROM (
    SELECT id, kind, payload::text AS payload, payload AS document, external_key,
           status::text AS status,
           claim_token IS NOT NULL AND delayed_till > now() AS processing,
           attempts_elapsed, attempts_left, max_attempts, messages, delayed_till,
           created_at, updated_at, started_at, finished_at, result::text AS result, snoozes
    FROM __schema__.tasks
    WHERE (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
      AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
      AND (%(key_prefix)s::text IS NULL OR starts_with(external_key, %(key_prefix)s::text))
      AND (%(status)s::text IS NULL
           OR CASE WHEN claim_token IS NOT NULL AND delayed_till > now() THEN 'processing'
                   ELSE status::text END = %(status)s::text)
      -- __status_literal__ (operations.list_tasks writes the stored status here)
    ORDER BY id DESC
    LIMIT %(scan)s
) AS recent
WHERE document @> %(payload_contains)s::jsonb
ORDER BY id DESC
LIMIT %(limit)s;
-- Reliability: leases renewed by a heartbeat, listener health.

-- name: extend_leases
-- Heartbeat: renew the leases of claims this process still holds; only rows holding the token.
UPDATE __schema__.tasks AS t
SET delayed_till = now() + make_interval(secs => %(lease)s)
WHERE t.id = ANY (%(ids)s::bigint[]) AND t.claim_token = ANY (%(tokens)s::uuid[])
RETURNING t.id;

-- name: listener_ping
-- Send a ping on the queue's channel; the LISTEN connection must hear it back.
SELECT pg_notify(%(channel)s, %(payload)s);
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

-- name: insert_audit_entries
-- Record operator actions, given as one JSON array of objects (actor, source, action, kind,
-- task_id, detail, rows). An entry about one task without a kind takes the task's kind, so
-- retention (by kind) finds it.
INSERT INTO __schema__.audit_log (actor, source, action, kind, task_id, detail, rows)
SELECT e ->> 'actor', e ->> 'source', e ->> 'action',
       coalesce(e ->> 'kind',
                (SELECT t.kind FROM __schema__.tasks AS t WHERE t.id = (e ->> 'task_id')::bigint)),
       (e ->> 'task_id')::bigint, coalesce(e -> 'detail', '{}'::jsonb), (e ->> 'rows')::bigint
FROM jsonb_array_elements(%(entries)s::jsonb) AS e;

-- name: list_audit_entries
-- A page of the audit log, newest first, before an id (the cursor), optionally of one kind,
-- source or action.
SELECT id, at, actor, source, action, kind, task_id, detail, rows
FROM __schema__.audit_log
WHERE (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(source)s::text IS NULL OR source = %(source)s::text)
  AND (%(action)s::text IS NULL OR action = %(action)s::text)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: prune_audit_log
-- Delete a kind's audit entries (and those of no kind) older than the window (seconds), with
-- the kind's throughput rows.
DELETE FROM __schema__.audit_log
WHERE (kind = %(kind)s OR kind IS NULL) AND at < now() - make_interval(secs => %(window)s);
-- Flow control: limits decided where tasks are claimed.

-- name: add_kind_limits_row
-- Make sure a limited kind has its row in kind_limits (its lock, its bucket, its overrides).
INSERT INTO __schema__.kind_limits (kind) VALUES (%(kind)s) ON CONFLICT (kind) DO NOTHING;

-- name: lock_kind_limits
-- Lock a limited kind's row until the claim's transaction ends, so the kind's limited claims
-- run one at a time and each counts what the previous ones committed; return the overrides.
SELECT rate, rate_per, rate_burst, global_concurrency, group_concurrency, overridden_at,
       group_rate, group_rate_per, group_rate_burst
FROM __schema__.kind_limits
WHERE kind = %(kind)s
FOR UPDATE;

-- name: lock_kind_limits_shared
-- The lock of a kind limited by groups only: claims of such kinds share it and run at once
-- (each locks the groups it claims from, lock_claim_groups), while claims under a kind-wide
-- limit and operators' changes wait for them; return the overrides.
SELECT rate, rate_per, rate_burst, global_concurrency, group_concurrency, overridden_at,
       group_rate, group_rate_per, group_rate_burst
FROM __schema__.kind_limits
WHERE kind = %(kind)s
FOR SHARE;

-- name: lock_claim_groups
-- Lock (transaction advisory locks, skipping those another claim holds) up to GROUPS task groups
-- with due tasks and a free slot as this statement sees them, oldest due first; claim_limited_tasks
-- in the same transaction then counts their running attempts afresh and claims only from them,
-- so no two claims decide for one group at once. Looks at most at SCAN due tasks. (NOT IN: a
-- hashed subplan whatever the planner believes of the table; busy groups are never NULL.)
WITH busy AS MATERIALIZED (
    SELECT r.task_group, count(*)::int AS n
    FROM __schema__.tasks AS r
    WHERE r.kind = %(kind)s AND r.claim_token IS NOT NULL AND r.holds_slot
      AND r.delayed_till > clock_timestamp() AND r.task_group IS NOT NULL
    GROUP BY r.task_group
), candidates AS (
    SELECT task_group, row_number() OVER () AS position
    FROM (
        SELECT * FROM (
            SELECT t.task_group
            FROM __schema__.tasks AS t
            WHERE t.kind = %(kind)s AND t.status IN ('new', 'must_retry') AND t.priority > 0
              AND t.delayed_till <= now() AND t.task_group IS NOT NULL
              AND t.task_group NOT IN (SELECT b.task_group FROM busy AS b
                                       WHERE b.n >= %(group_concurrency)s::int)
            ORDER BY t.priority DESC, t.delayed_till
            LIMIT %(scan)s
        ) AS high
        UNION ALL
        SELECT * FROM (
            SELECT t.task_group
            FROM __schema__.tasks AS t
            WHERE t.kind = %(kind)s AND t.status IN ('new', 'must_retry') AND t.priority = 0
              AND t.delayed_till <= now() AND t.task_group IS NOT NULL
              AND t.task_group NOT IN (SELECT b.task_group FROM busy AS b
                                       WHERE b.n >= %(group_concurrency)s::int)
            ORDER BY t.delayed_till
            LIMIT %(scan)s
        ) AS plain
        UNION ALL
        SELECT * FROM (
            SELECT t.task_group
            FROM __schema__.tasks AS t
            WHERE t.kind = %(kind)s AND t.status IN ('new', 'must_retry') AND t.priority < 0
              AND t.delayed_till <= now() AND t.task_group IS NOT NULL
              AND t.task_group NOT IN (SELECT b.task_group FROM busy AS b
                                       WHERE b.n >= %(group_concurrency)s::int)
            ORDER BY t.priority DESC, t.delayed_till
            LIMIT %(scan)s
        ) AS low
    ) AS ranked
), ordered AS (
    -- OFFSET 0: sorted before the locks are tried (a lock is tried only for a group needed).
    SELECT task_group
    FROM candidates
    GROUP BY task_group
    ORDER BY min(position)
    OFFSET 0
)
SELECT coalesce(array_agg(task_group), '{}') AS locked
FROM (
    SELECT task_group
    FROM ordered
    WHERE pg_try_advisory_xact_lock(hashtextextended(%(lock_prefix)s || task_group, 0))
    LIMIT %(groups)s
) AS locked;

-- name: claim_limited_tasks
-- Claim like claim_due_tasks, within the kind's limits, after lock_kind_limits in the same
-- transaction: at most GLOBAL_CONCURRENCY running attempts of the kind (claims holding a slot
-- whose lease runs), at most GROUP_CONCURRENCY per task group, one token of the kind's
-- bucket (RATE tokens a second, BURST at most) per claimed task, and one token of its group's
-- bucket (GROUP_RATE, GROUP_BURST; a group without a row has a full one); NULL limits do not
-- apply. Group buckets that are surely full again are deleted.
-- Running attempts are counted on the clock, not the transaction's start: the lock may have
-- been waited for. Looks at most at SCAN due tasks for groups with a free slot. GROUPS, when
-- not NULL, are the groups lock_claim_groups locked: only their running attempts are counted
-- and only their tasks (and tasks in no group) claimed. Returns the claimed rows in claim
-- order, or one row of NULLs when none, each with the tokens left (NULL: no rate limit), how
-- many the limits allowed, how many due tasks were candidates, and whether due tasks wait on
-- a group (busy, out of tokens, or being claimed by another process).
-- Reservations keep a fleet of loops sharing one bucket from bursting: PREPAID tokens, which
-- this loop reserved earlier and which are due now, are its own on top of the bucket's; a
-- claim that runs out of tokens while tasks wait reserves RESERVE future tokens (the bucket
-- goes below zero by them) when they are due within MAX_WAIT seconds, and returns how many it
-- reserved and the tokens left before, from which the loop knows when to come back for them.
WITH bucket AS MATERIALIZED (
    SELECT least(%(burst)s::float8,
                 l.tokens + greatest(extract(epoch FROM clock_timestamp() - l.refilled_at), 0)
                            * %(rate)s::float8) AS tokens,
           clock_timestamp() AS refilled_at
    FROM __schema__.kind_limits AS l
    WHERE l.kind = %(kind)s AND %(rate)s::float8 IS NOT NULL
), running AS MATERIALIZED (
    SELECT r.task_group
    FROM __schema__.tasks AS r
    WHERE r.kind = %(kind)s AND r.claim_token IS NOT NULL AND r.holds_slot
      AND r.delayed_till > clock_timestamp()
      AND %(counts_slots)s
      AND (%(groups)s::text[] IS NULL OR r.task_group = ANY (%(groups)s::text[]))
), busy AS MATERIALIZED (
    SELECT task_group, count(*)::int AS n
    FROM running
    WHERE task_group IS NOT NULL
    GROUP BY task_group
), group_tokens AS MATERIALIZED (
    SELECT g.task_group,
           least(%(group_burst)s::float8,
                 g.tokens + greatest(extract(epoch FROM clock_timestamp() - g.refilled_at), 0)
                            * %(group_rate)s::float8) AS tokens
    FROM __schema__.group_buckets AS g
    WHERE g.kind = %(kind)s AND %(group_rate)s::float8 IS NOT NULL
), allowed AS MATERIALIZED (
    SELECT greatest(0, least(
               %(limit)s::int,
               %(global_concurrency)s::int - (SELECT count(*) FROM running)::int,
               CASE WHEN %(rate)s::float8 IS NOT NULL
                    THEN %(prepaid)s::int + floor(greatest((SELECT tokens FROM bucket), 0))::int
               END
           )) AS n
), candidates AS MATERIALIZED (
    SELECT id, task_group, row_number() OVER () AS position
    FROM (
        SELECT * FROM (
            SELECT t.id, t.task_group
            FROM __schema__.tasks AS t
            WHERE t.kind = %(kind)s AND t.status IN ('new', 'must_retry') AND t.priority > 0
              AND t.delayed_till <= now()
              AND (%(group_concurrency)s::int IS NULL OR t.task_group IS NULL OR NOT EXISTS (
                  SELECT FROM busy AS b
                  WHERE b.task_group = t.task_group AND b.n >= %(group_concurrency)s::int))
              AND (%(group_rate)s::float8 IS NULL OR t.task_group IS NULL OR NOT EXISTS (
                  SELECT FROM group_tokens AS gt
                  WHERE gt.task_group = t.task_group AND gt.tokens < 1))
              AND (%(groups)s::text[] IS NULL OR t.task_group IS NULL
                   OR t.task_group = ANY (%(groups)s::text[]))
            ORDER BY t.priority DESC, t.delayed_till
            LIMIT %(scan)s
        ) AS high
        UNION ALL
        SELECT * FROM (
            SELECT t.id, t.task_group
            FROM __schema__.tasks AS t
            WHERE t.kind = %(kind)s AND t.status IN ('new', 'must_retry')
              AND t.delayed_till <= now() AND t.priority = 0
              AND (%(group_concurrency)s::int IS NULL OR t.task_group IS NULL OR NOT EXISTS (
                  SELECT FROM busy AS b
                  WHERE b.task_group = t.task_group AND b.n >= %(group_concurrency)s::int))
              AND (%(group_rate)s::float8 IS NULL OR t.task_group IS NULL OR NOT EXISTS (
                  SELECT FROM group_tokens AS gt
                  WHERE gt.task_group = t.task_group AND gt.tokens < 1))
              AND (%(groups)s::text[] IS NULL OR t.task_group IS NULL
                   OR t.task_group = ANY (%(groups)s::text[]))
            ORDER BY t.delayed_till
            LIMIT %(scan)s
        ) AS plain
        UNION ALL
        SELECT * FROM (
            SELECT t.id, t.task_group
            FROM __schema__.tasks AS t
            WHERE t.kind = %(kind)s AND t.status IN ('new', 'must_retry') AND t.priority < 0
              AND t.delayed_till <= now()
              AND (%(group_concurrency)s::int IS NULL OR t.task_group IS NULL OR NOT EXISTS (
                  SELECT FROM busy AS b
                  WHERE b.task_group = t.task_group AND b.n >= %(group_concurrency)s::int))
              AND (%(group_rate)s::float8 IS NULL OR t.task_group IS NULL OR NOT EXISTS (
                  SELECT FROM group_tokens AS gt
                  WHERE gt.task_group = t.task_group AND gt.tokens < 1))
              AND (%(groups)s::text[] IS NULL OR t.task_group IS NULL
                   OR t.task_group = ANY (%(groups)s::text[]))
            ORDER BY t.priority DESC, t.delayed_till
            LIMIT %(scan)s
        ) AS low
    ) AS ranked
    WHERE (SELECT n FROM allowed) > 0
      AND NOT EXISTS (
          SELECT FROM __schema__.kinds AS k WHERE k.kind = %(kind)s AND k.paused_at IS NOT NULL
      )
    -- Without group limits one more than allowed tells whether work is left waiting.
    LIMIT CASE WHEN %(group_concurrency)s::int IS NULL AND %(group_rate)s::float8 IS NULL
               THEN (SELECT n FROM allowed) + 1
               ELSE %(scan)s END
), blocked AS MATERIALIZED (
    -- Due tasks (of the first SCAN) that wait on their group: the loop then waits for a slot.
    SELECT EXISTS (
        SELECT FROM (
            SELECT t.task_group
            FROM __schema__.tasks AS t
            WHERE t.kind = %(kind)s AND t.status IN ('new', 'must_retry')
              AND t.delayed_till <= now() AND t.task_group IS NOT NULL
              AND (%(group_concurrency)s::int IS NOT NULL OR %(group_rate)s::float8 IS NOT NULL)
            LIMIT %(scan)s
        ) AS w
        WHERE (%(groups)s::text[] IS NOT NULL AND w.task_group <> ALL (%(groups)s::text[]))
           OR EXISTS (SELECT FROM busy AS b WHERE b.task_group = w.task_group
                      AND b.n >= %(group_concurrency)s::int)
           OR EXISTS (SELECT FROM group_tokens AS gt WHERE gt.task_group = w.task_group
                      AND gt.tokens < 1)
    ) AS waiting
), chosen AS (
    SELECT c.id, c.position
    FROM (
        SELECT id, task_group, position,
               row_number() OVER (PARTITION BY task_group ORDER BY position) AS nth
        FROM candidates
    ) AS c
    LEFT JOIN busy AS b ON b.task_group = c.task_group
    LEFT JOIN group_tokens AS gt ON gt.task_group = c.task_group
    WHERE (%(group_concurrency)s::int IS NULL OR c.task_group IS NULL
           OR c.nth + coalesce(b.n, 0) <= %(group_concurrency)s::int)
      AND (%(group_rate)s::float8 IS NULL OR c.task_group IS NULL
           OR c.nth <= floor(coalesce(gt.tokens, %(group_burst)s::float8)))
    ORDER BY c.position
    LIMIT (SELECT n FROM allowed)
), due AS (
    -- Driven by the chosen rows unnested from arrays, which the planner takes for a few rows:
    -- one primary-key lookup per row, here and in the update (a join of the two lists, or an
    -- id array beside it, let a plan compare every chosen row with every locked one: 60 ms
    -- for 500). Rechecked as text and through coalesce, so that the planner reaches the rows
    -- by the primary key alone (a bitmap AND with tasks_open_idx read the whole open index).
    SELECT t.id, t.claim_token AS previous_token, c.position
    FROM unnest(ARRAY(SELECT id FROM chosen ORDER BY position),
                ARRAY(SELECT position FROM chosen ORDER BY position)) AS c(id, position)
    JOIN __schema__.tasks AS t ON t.id = c.id
    WHERE t.status::text IN ('new', 'must_retry') AND coalesce(t.delayed_till <= now(), false)
    FOR NO KEY UPDATE OF t SKIP LOCKED
), claimed AS (
    UPDATE __schema__.tasks AS t
    SET status = CASE WHEN t.attempts_left <= 1 THEN 'no_attempts_left'
                      ELSE 'must_retry' END::__schema__.task_status,
        attempts_left = greatest(t.attempts_left - 1, 0),
        attempts_elapsed = t.attempts_elapsed + 1,
        delayed_till = now() + make_interval(secs => %(lease)s),
        claim_token = gen_random_uuid(),
        holds_slot = %(counts_slots)s,
        -- When the claim took its tokens (the transaction may have begun before the lock).
        started_at = clock_timestamp(),
        updated_at = now()
    FROM unnest(ARRAY(SELECT id FROM due ORDER BY position),
                ARRAY(SELECT previous_token FROM due ORDER BY position),
                ARRAY(SELECT position FROM due ORDER BY position))
         AS due(id, previous_token, position)
    WHERE t.id = due.id
    RETURNING t.id, t.payload::text AS payload, t.external_key, t.attempts_elapsed,
              t.attempts_left, t.max_attempts, t.claim_token::text AS claim_token,
              nullif(t.messages, '{}') AS messages, t.started_at,
              due.previous_token IS NOT NULL AS lease_lost, due.position, t.task_group,
              t.snoozes, t.workflow_id, t.node, t.parent_results, t.trace_context
), group_spent AS (
    INSERT INTO __schema__.group_buckets AS g (kind, task_group, tokens, refilled_at)
    SELECT %(kind)s, c.task_group,
           coalesce(min(gt.tokens), %(group_burst)s::float8) - count(*), clock_timestamp()
    FROM claimed AS c
    LEFT JOIN group_tokens AS gt ON gt.task_group = c.task_group
    WHERE c.task_group IS NOT NULL AND %(group_rate)s::float8 IS NOT NULL
    GROUP BY c.task_group
    ORDER BY c.task_group
    ON CONFLICT (kind, task_group) DO UPDATE
    SET tokens = excluded.tokens, refilled_at = excluded.refilled_at
), groups_refilled AS (
    DELETE FROM __schema__.group_buckets AS g
    USING group_tokens AS gt
    WHERE g.kind = %(kind)s AND g.task_group = gt.task_group
      AND gt.tokens >= %(group_burst)s::float8
      AND NOT EXISTS (SELECT FROM claimed AS c WHERE c.task_group = g.task_group)
), used AS MATERIALIZED (
    -- Unused prepaid tokens go back to the bucket.
    SELECT b.tokens + %(prepaid)s::int - (SELECT count(*) FROM claimed) AS tokens
    FROM bucket AS b
), reservation AS MATERIALIZED (
    SELECT u.tokens,
           CASE WHEN u.tokens < 1 AND %(reserve)s::int > 0
                     AND (%(reserve)s::int - u.tokens) / %(rate)s::float8 <= %(max_wait)s::float8
                     AND (SELECT count(*) FROM claimed) < %(limit)s::int
                     -- Tasks wait (the claim was held back, not short of work).
                     AND (SELECT count(*) FROM (
                              SELECT FROM __schema__.tasks AS t
                              WHERE t.kind = %(kind)s AND t.status IN ('new', 'must_retry')
                                AND t.delayed_till <= now()
                              LIMIT %(limit)s::int + 1) AS w) > (SELECT count(*) FROM claimed)
                THEN %(reserve)s::int ELSE 0 END AS n
    FROM used AS u
), spent AS (
    UPDATE __schema__.kind_limits AS l
    SET tokens = r.tokens - r.n, refilled_at = b.refilled_at
    FROM bucket AS b, reservation AS r
    WHERE l.kind = %(kind)s
    RETURNING l.tokens
)
SELECT c.id, c.payload, c.external_key, c.attempts_elapsed, c.attempts_left, c.max_attempts,
       c.claim_token, c.messages, c.started_at, c.lease_lost, c.snoozes,
       CASE WHEN c.workflow_id IS NOT NULL
            THEN jsonb_build_array(c.workflow_id, c.node, c.parent_results)::text END,
       c.trace_context,
       (SELECT tokens FROM spent), (SELECT n FROM allowed), (SELECT count(*) FROM candidates),
       (SELECT waiting FROM blocked), (SELECT n FROM reservation),
       (SELECT tokens FROM reservation)
FROM (SELECT) AS one
LEFT JOIN claimed AS c ON true
ORDER BY c.position;

-- name: set_kind_limits
-- Store an operator's overrides of a kind's limits (a field not SET_ keeps its override, NULL
-- goes back to the code's value), record the change in limit_changes, and wake the kind's
-- workers, which read the overrides on their next claim.
WITH changed AS (
    INSERT INTO __schema__.kind_limits AS l
        (kind, rate, rate_per, rate_burst, global_concurrency, group_concurrency,
         group_rate, group_rate_per, group_rate_burst, overridden_at)
    VALUES (%(kind)s, %(rate)s, %(rate_per)s, %(rate_burst)s, %(global_concurrency)s,
            %(group_concurrency)s, %(group_rate)s, %(group_rate_per)s, %(group_rate_burst)s,
            now())
    ON CONFLICT (kind) DO UPDATE
    SET rate = CASE WHEN %(set_rate)s THEN excluded.rate ELSE l.rate END,
        rate_per = CASE WHEN %(set_rate)s THEN excluded.rate_per ELSE l.rate_per END,
        rate_burst = CASE WHEN %(set_rate)s THEN excluded.rate_burst ELSE l.rate_burst END,
        global_concurrency = CASE WHEN %(set_global)s THEN excluded.global_concurrency
                                  ELSE l.global_concurrency END,
        group_concurrency = CASE WHEN %(set_group)s THEN excluded.group_concurrency
                                 ELSE l.group_concurrency END,
        group_rate = CASE WHEN %(set_group_rate)s THEN excluded.group_rate
                          ELSE l.group_rate END,
        group_rate_per = CASE WHEN %(set_group_rate)s THEN excluded.group_rate_per
                              ELSE l.group_rate_per END,
        group_rate_burst = CASE WHEN %(set_group_rate)s THEN excluded.group_rate_burst
                                ELSE l.group_rate_burst END,
        overridden_at = now()
    RETURNING l.kind, l.rate, l.rate_per, l.rate_burst, l.global_concurrency,
              l.group_concurrency, l.overridden_at, l.group_rate, l.group_rate_per,
              l.group_rate_burst
), audited AS (
    INSERT INTO __schema__.limit_changes (kind, actor, limits)
    SELECT kind, %(actor)s, %(change)s::jsonb FROM changed
)
SELECT rate, rate_per, rate_burst, global_concurrency, group_concurrency, overridden_at,
       group_rate, group_rate_per, group_rate_burst, pg_notify(%(channel)s, 'p:' || kind)
FROM changed;

-- name: read_kind_limits
-- The operators' overrides of the given kinds' limits (kinds without a row have none).
SELECT kind, rate, rate_per, rate_burst, global_concurrency, group_concurrency, overridden_at,
       group_rate, group_rate_per, group_rate_burst
FROM __schema__.kind_limits
WHERE kind = ANY (%(kinds)s::text[]);

-- name: list_limit_changes
-- The newest changes of a kind's limit overrides (the audit trail), newest first.
SELECT changed_at, actor, limits::text
FROM __schema__.limit_changes
WHERE kind = %(kind)s
ORDER BY id DESC
LIMIT %(limit)s;

-- name: push_workflow
-- Insert a workflow's nodes given as one JSON array of [kind, payload, max_attempts, priority,
-- group, node name, [positions of its parents, 1-based], release condition]: ids are drawn
-- first, so each row is written once with its parents' and children's ids. A node with
-- parents is stored blocked, waiting on all of them; the others are due now and notify their
-- kinds. Every node records the pushing span's TRACE context (NULL: none). Returns (position,
-- id) per node.
WITH input AS MATERIALIZED (
    SELECT i.ord, nextval('__schema__.tasks_id_seq'::regclass) AS id, i.t
    FROM jsonb_array_elements(%(nodes)s::jsonb) WITH ORDINALITY AS i(t, ord)
), edges AS MATERIALIZED (
    SELECT c.id AS child, p.id AS parent
    FROM input AS c
    CROSS JOIN LATERAL jsonb_array_elements_text(c.t -> 6) AS e(ord)
    JOIN input AS p ON p.ord = e.ord::bigint
), parent_ids AS (
    SELECT child, array_agg(parent ORDER BY parent) AS ids FROM edges GROUP BY child
), child_ids AS (
    SELECT parent, array_agg(child ORDER BY child) AS ids FROM edges GROUP BY parent
), inserted AS (
    INSERT INTO __schema__.tasks
        (id, kind, payload, status, attempts_left, max_attempts, priority, task_group,
         workflow_id, node, parents, children, release_when, parents_pending, parents_failed,
         trace_context)
    SELECT i.id, i.t ->> 0, nullif(i.t -> 1, 'null'::jsonb),
           CASE WHEN p.ids IS NULL THEN 'new' ELSE 'blocked' END::__schema__.task_status,
           (i.t ->> 2)::int, (i.t ->> 2)::int, (i.t ->> 3)::smallint, i.t ->> 4,
           %(workflow_id)s::uuid, i.t ->> 5, p.ids, c.ids, i.t ->> 7,
           coalesce(cardinality(p.ids), 0), 0, %(trace)s
    FROM input AS i
    LEFT JOIN parent_ids AS p ON p.child = i.id
    LEFT JOIN child_ids AS c ON c.parent = i.id
    ORDER BY i.ord
    RETURNING kind, status
), notified AS (
    SELECT pg_notify(%(channel)s, 'n:' || extract(epoch FROM now())::text || ':' || kind)
    FROM (SELECT DISTINCT kind FROM inserted WHERE status = 'new') AS due_kinds
)
SELECT input.ord, input.id
FROM input
CROSS JOIN (SELECT count(*) FROM notified) AS n
ORDER BY input.ord;

-- name: settle_workflow_children
-- Tell the children of workflow nodes that just ended (ids; rows already final in this
-- transaction) that these parents ended: each child counts them off, notes how many ended
-- without success, and keeps their outcomes and results by node name. The children are locked
-- in id order first, so concurrent settlements of one child take turns (no deadlock) and each
-- sees the others' counts: the one that counts off the last parent releases the child
-- (blocked -> new, due now, its kind notified), exactly once. A blocked child that needs every
-- parent's success is cancelled as soon as one ended without it, naming that parent. Returns
-- the children that changed state, with their new status: the cancelled ones are ended
-- parents in turn (the caller settles their children next, until none is left).
WITH ended AS (
    SELECT p.id, p.node, p.status::text AS status, p.result, p.children
    FROM __schema__.tasks AS p
    WHERE p.id = ANY (%(ids)s::bigint[]) AND p.children IS NOT NULL
      AND p.status IN ('succeeded', 'cancelled', 'no_attempts_left') AND p.claim_token IS NULL
), edges AS (
    SELECT c.child, e.id AS parent, e.node, e.status, e.result
    FROM ended AS e
    CROSS JOIN LATERAL unnest(e.children) AS c(child)
), per_child AS (
    SELECT child,
           count(*) AS ended,
           count(*) FILTER (WHERE status <> 'succeeded') AS failed,
           (array_agg(parent ORDER BY parent) FILTER (WHERE status <> 'succeeded'))[1]
               AS failed_parent,
           (array_agg('cancelled: parent ' || node || ' (task ' || parent::text || ') '
                      || CASE WHEN status = 'cancelled' THEN 'was cancelled'
                              ELSE 'failed with no attempts left' END ORDER BY parent)
                FILTER (WHERE status <> 'succeeded'))[1] AS reason,
           jsonb_object_agg(node, jsonb_build_object('id', parent, 'status', status,
                                                     'result', result)) AS results
    FROM edges
    GROUP BY child
), locked AS (
    SELECT t.id, t.status = 'blocked' AS was_blocked
    FROM __schema__.tasks AS t
    WHERE t.id IN (SELECT child FROM per_child)
    ORDER BY t.id
    FOR NO KEY UPDATE
), decided AS (
    SELECT pc.*, l.was_blocked
    FROM per_child AS pc
    JOIN locked AS l ON l.id = pc.child
), settled AS (
    UPDATE __schema__.tasks AS t
    SET parents_pending = t.parents_pending - d.ended,
        parents_failed = t.parents_failed + d.failed,
        parent_results = coalesce(t.parent_results, '{}'::jsonb) || d.results,
        status = CASE WHEN t.status <> 'blocked' THEN t.status
                      WHEN t.release_when = 'all_succeeded' AND t.parents_failed + d.failed > 0
                      THEN 'cancelled'
                      WHEN t.parents_pending - d.ended <= 0 THEN 'new'
                      ELSE 'blocked' END::__schema__.task_status,
        cancelled_by = CASE WHEN t.status = 'blocked' AND t.release_when = 'all_succeeded'
                                 AND t.parents_failed + d.failed > 0
                            THEN d.failed_parent ELSE t.cancelled_by END,
        messages = CASE WHEN t.status = 'blocked' AND t.release_when = 'all_succeeded'
                             AND t.parents_failed + d.failed > 0
                        THEN t.messages || d.reason ELSE t.messages END,
        finished_at = CASE WHEN t.status = 'blocked' AND t.release_when = 'all_succeeded'
                                AND t.parents_failed + d.failed > 0
                           THEN now() ELSE t.finished_at END,
        delayed_till = CASE WHEN t.status = 'blocked' THEN now() ELSE t.delayed_till END,
        updated_at = now()
    FROM decided AS d
    WHERE t.id = d.child
    RETURNING t.id, t.kind, t.status::text AS status, t.waited,
              d.was_blocked AND t.status <> 'blocked' AS changed
), woken AS (
    SELECT pg_notify(%(channel)s, 'n:' || extract(epoch FROM now())::text || ':' || kind)
    FROM (SELECT DISTINCT kind FROM settled WHERE changed AND status = 'new') AS due_kinds
), announced AS (
    SELECT pg_notify(%(finished_channel)s, 'f:' || string_agg(id::text || 'c', ','))
    FROM settled
    WHERE changed AND status = 'cancelled' AND waited
    GROUP BY id / 150
)
SELECT id, status
FROM settled
CROSS JOIN (SELECT count(*) FROM woken) AS w
CROSS JOIN (SELECT count(*) FROM announced) AS a
WHERE changed
ORDER BY id;

-- name: reopen_workflow_children
-- Undo settle_workflow_children for workflow nodes that ended and are open again (ids: an
-- operator retried them): each child counts them as pending again and forgets their outcome;
-- a child their failure cancelled is blocked again once no parent of it has failed. Returns
-- the children blocked again: they are open again in turn (the caller reopens their children
-- next). A child that already ran is left as it is.
WITH reopened AS (
    SELECT p.id, p.node, p.children
    FROM __schema__.tasks AS p
    WHERE p.id = ANY (%(ids)s::bigint[]) AND p.children IS NOT NULL
      AND p.status IN ('new', 'must_retry', 'blocked')
), per_child AS (
    SELECT c.child,
           array_agg(r.node) AS nodes
    FROM reopened AS r
    CROSS JOIN LATERAL unnest(r.children) AS c(child)
    GROUP BY c.child
), locked AS (
    SELECT t.id, t.parent_results, t.status = 'cancelled' AND t.cancelled_by IS NOT NULL
               AS cascaded,
           (SELECT count(*) FROM unnest(pc.nodes) AS n(node)
            WHERE t.parent_results -> n.node IS NOT NULL) AS counted,
           (SELECT count(*) FROM unnest(pc.nodes) AS n(node)
            WHERE t.parent_results -> n.node ->> 'status' <> 'succeeded') AS failed,
           pc.nodes
    FROM __schema__.tasks AS t
    JOIN per_child AS pc ON pc.child = t.id
    ORDER BY t.id
    FOR NO KEY UPDATE OF t
), reset AS (
    UPDATE __schema__.tasks AS t
    SET parents_pending = t.parents_pending + l.counted,
        parents_failed = t.parents_failed - l.failed,
        parent_results = t.parent_results - l.nodes,
        status = CASE WHEN l.cascaded AND t.parents_failed - l.failed <= 0 THEN 'blocked'
                      ELSE t.status END::__schema__.task_status,
        cancelled_by = CASE WHEN l.cascaded AND t.parents_failed - l.failed <= 0 THEN NULL
                            ELSE t.cancelled_by END,
        finished_at = CASE WHEN l.cascaded AND t.parents_failed - l.failed <= 0 THEN NULL
                           ELSE t.finished_at END,
        updated_at = now()
    FROM locked AS l
    WHERE t.id = l.id AND l.counted > 0
    RETURNING t.id, l.cascaded AND t.status = 'blocked' AS reblocked
)
SELECT id FROM reset WHERE reblocked ORDER BY id;

-- name: get_workflow
-- A workflow's nodes in push order, with their derived status, parents and children.
SELECT id, kind, node,
       CASE WHEN claim_token IS NOT NULL AND delayed_till > now() THEN 'processing'
            ELSE status::text END AS status,
       coalesce(parents, '{}'::bigint[]), coalesce(children, '{}'::bigint[]), release_when,
       created_at, started_at, finished_at, attempts_elapsed, messages
FROM __schema__.tasks
WHERE workflow_id = %(workflow_id)s::uuid
ORDER BY id;

-- name: get_tasks_nodes
-- Node names and statuses of tasks by id (a task page's parents and children).
SELECT id, kind, node, status::text FROM __schema__.tasks WHERE id = ANY (%(ids)s::bigint[]);

-- name: end_abandoned_workflow_nodes
-- Workflow nodes of these kinds whose last attempt was claimed by a process that died (out of
-- attempts, the lease over, no result written): drop the claim and say so on the row, so the
-- caller settles their children as it would for any exhausted node. Through the broken-tasks
-- index; at most LIMIT a call.
UPDATE __schema__.tasks AS t
SET claim_token = NULL,
    messages = t.messages || 'the last attempt''s lease ended without a result (its worker stopped)'::text,
    finished_at = now(),
    updated_at = now()
WHERE t.id IN (
    SELECT id FROM __schema__.tasks
    WHERE kind = ANY (%(kinds)s::text[]) AND status = 'no_attempts_left'
      AND claim_token IS NOT NULL AND delayed_till <= now() AND workflow_id IS NOT NULL
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
)
RETURNING t.id;

"""settle: on PostgreSQL, a worker records the completed attempts of a batch and claims
its next tasks in one call of `provisioning_settle`, one round trip and one transaction
(`orchestrator/store/claims.py` says how it is used); SQLite has nothing to change

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: One row of what `provisioning_settle` returns; `kind` says which columns mean something:
#: ended (id, workflow_id: a completion recorded), deferred (id: not recorded, its
#: workflow would have nothing left to run: the caller records it in a transaction of
#: its own, which ends the workflow), claimed (a task now running for the worker: what
#: its provider call needs), event (seq, type, workflow_id, id as the task, data: an
#: event written, with `at`, returned when asked for the webhook outbox).
SETTLED = """
CREATE TYPE provisioning_settled AS (
    kind text,
    id text,
    name text,
    workflow_id text,
    provider text,
    action text,
    params json,
    attempts integer,
    timeout double precision,
    check_mode boolean,
    compensates text,
    compensation json,
    handle json,
    seq bigint,
    type text,
    data json,
    at timestamptz
)
"""

SETTLE = """
CREATE FUNCTION provisioning_settle(
    p_worker text,
    -- Completed attempts of this worker: [{"id", "output", "result"}, ...]
    p_ends json,
    -- The time of the events written
    p_at timestamptz,
    -- Claim up to this many ready tasks (0: none)
    p_batch integer,
    p_lease double precision,
    p_global_limit integer,
    p_provider_limit integer,
    -- {"instance": its limit, ...}: instances with a limit of their own
    p_provider_limits jsonb,
    -- Also return the events written (for the webhook outbox)
    p_events boolean
) RETURNS SETOF provisioning_settled
LANGUAGE plpgsql
-- Planned once per session: planning its statements anew at each call (the custom
-- plans the arrays of ids would otherwise get) cost more than running them.
SET plan_cache_mode = force_generic_plan
-- Its statements reach a handful of rows by their keys: a plan that scans (made while a
-- table was small, or before it was analyzed) is never the right one here, and bitmap
-- scans leave the index entries of dead row versions to be read again at every call,
-- where index scans mark them for skipping (tasks change state, so every change leaves
-- some).
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    r provisioning_settled;
    v_ids text[];
    v_deferred text[] := '{}';
    v_claimed integer := 0;
BEGIN
    IF p_batch > 0 THEN
        -- Claims are serialized, so that the running counts the limits are checked
        -- against cannot change under one; taken before any row lock, as a cancel does.
        PERFORM pg_advisory_xact_lock(1886547574);
    END IF;

    IF json_array_length(p_ends) > 0 THEN
        SELECT array_agg(e.id) INTO v_ids FROM json_to_recordset(p_ends) AS e(id text);
        -- The workflows' rows first, in one order: every transaction that ends a task
        -- locks its workflow, so that the last two ends of a workflow cannot both miss
        -- that nothing is left. Each statement below sees what committed meanwhile.
        PERFORM 1 FROM workflows w
        WHERE w.id IN (SELECT t.workflow_id FROM tasks t WHERE t.id = ANY (v_ids))
        ORDER BY w.id
        FOR UPDATE;
        -- A workflow these ends would leave with nothing to run (or whose start was
        -- not recorded): its ends are recorded by the caller, with the workflow's end.
        SELECT coalesce(array_agg(w.id), '{}') INTO v_deferred
        FROM workflows w
        WHERE w.id IN (SELECT t.workflow_id FROM tasks t WHERE t.id = ANY (v_ids))
          -- (Each a lookup of the workflow's first such task: LIMIT 1, not a set.)
          AND (w.status = 'Pending' OR (
                (SELECT 1 FROM tasks o
                 WHERE o.workflow_id = w.id AND o.status = 'Pending' LIMIT 1) IS NULL
                AND (SELECT 1 FROM tasks o
                     WHERE o.workflow_id = w.id AND o.status = 'Running'
                       AND o.id <> ALL (v_ids) LIMIT 1) IS NULL));

        FOR r IN
            WITH e AS (
                SELECT x.id, x.output, x.result, x.n
                FROM ROWS FROM (json_to_recordset(p_ends) AS (id text, output text, result json))
                     WITH ORDINALITY AS x(id, output, result, n)
            ),
            done AS (
                -- Only while the lease is still this worker's.
                UPDATE tasks t
                SET status = 'Completed', output = e.output, result = e.result, error = NULL,
                    progress = 100.0, completed_at = p_at, lease_owner = NULL,
                    lease_expires_at = NULL, handle = NULL
                FROM e
                WHERE t.id = ANY (v_ids) AND t.id = e.id  -- (found by their keys)
                  AND t.status = 'Running' AND t.lease_owner = p_worker
                  AND t.workflow_id <> ALL (v_deferred)
                RETURNING t.id, t.name, t.workflow_id, t.operation_id, e.n
            ),
            released AS (
                -- Each dependent's counter goes down once per edge from a completed task.
                UPDATE tasks d
                SET pending_dependencies = d.pending_dependencies - c.n
                FROM (
                    SELECT dep.task_id, count(*)::integer AS n
                    FROM task_dependencies dep JOIN done ON dep.depends_on = done.id
                    GROUP BY dep.task_id
                ) c
                WHERE d.id = c.task_id
            ),
            written AS (
                INSERT INTO events (at, type, workflow_id, task_id, data)
                SELECT p_at, 'TaskStatusChanged', done.workflow_id, done.id,
                       CASE WHEN done.operation_id IS NULL
                            THEN json_build_object(
                                'task_id', done.id, 'name', done.name, 'status', 'Completed')
                            ELSE json_build_object(
                                'task_id', done.id, 'name', done.name, 'status', 'Completed',
                                'operation_id', done.operation_id)
                       END
                FROM done
                ORDER BY done.n
                RETURNING events.seq, events.type, events.workflow_id, events.task_id,
                          events.data, events.at
            )
            SELECT 'ended', done.id, NULL, done.workflow_id, NULL, NULL, NULL::json,
                   NULL::integer, NULL::double precision, NULL::boolean, NULL, NULL::json,
                   NULL::json, NULL::bigint, NULL, NULL::json, NULL::timestamptz
            FROM done
            UNION ALL
            SELECT 'deferred', e.id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                   NULL, NULL, NULL, NULL, NULL, NULL
            FROM e JOIN tasks t ON t.id = e.id
            WHERE t.workflow_id = ANY (v_deferred)
            UNION ALL
            SELECT 'event', w.task_id, NULL, w.workflow_id, NULL, NULL, NULL, NULL, NULL,
                   NULL, NULL, NULL, NULL, w.seq, w.type, w.data, w.at
            FROM written w
            WHERE p_events
        LOOP
            RETURN NEXT r;
        END LOOP;
    END IF;

    IF p_batch > 0 THEN
        FOR r IN
            WITH running AS (
                SELECT t.workflow_id, t.provider FROM tasks t WHERE t.status = 'Running'
            ),
            ready AS (
                -- At most parallel_limit ready tasks per active workflow, each found
                -- through the partial index of ready tasks.
                SELECT t.id, t.workflow_id, t.provider, t.position, w.created_at AS submitted,
                       w.parallel_limit, t.in_workflow
                FROM workflows w
                CROSS JOIN LATERAL (
                    SELECT c.id, c.workflow_id, c.provider, c.position,
                           row_number() OVER (ORDER BY c.position) AS in_workflow
                    FROM tasks c
                    WHERE c.workflow_id = w.id AND c.status = 'Pending'
                      AND c.pending_dependencies = 0
                      AND (c.not_before IS NULL OR c.not_before <= now())
                    ORDER BY c.position
                    LIMIT w.parallel_limit
                ) t
                WHERE w.status IN ('Pending', 'Running', 'RollingBack')
                  AND NOT w.cancel_requested
            ),
            within_workflow AS (
                -- Under its workflow's limit first, so that tasks a workflow may not
                -- start do not take their provider's places.
                SELECT q.*,
                       row_number() OVER (PARTITION BY q.provider ORDER BY q.submitted, q.position)
                           AS in_provider
                FROM ready q
                WHERE q.in_workflow
                      + (SELECT count(*) FROM running x WHERE x.workflow_id = q.workflow_id)
                      <= q.parallel_limit
            ),
            eligible AS (
                SELECT q.id FROM within_workflow q
                WHERE q.in_provider
                      + (SELECT count(*) FROM running x WHERE x.provider = q.provider)
                      <= coalesce((p_provider_limits ->> q.provider)::integer, p_provider_limit)
                ORDER BY q.in_workflow, q.submitted, q.position
                LIMIT greatest(0, least(p_batch, p_global_limit - (SELECT count(*) FROM running)))
            ),
            locked AS (
                -- (Each found by its key: not by a scan of every ready task.)
                SELECT t.id FROM eligible e JOIN tasks t ON t.id = e.id
                WHERE t.status = 'Pending' AND t.pending_dependencies = 0
                FOR UPDATE OF t SKIP LOCKED
            ),
            claimed AS (
                UPDATE tasks
                SET status = 'Running', attempts = tasks.attempts + 1, lease_owner = p_worker,
                    -- The clock now, not the transaction's start: a dependency's end
                    -- committed while this claim waited for the lock must not seem to
                    -- come after this start.
                    lease_expires_at = clock_timestamp() + make_interval(secs => p_lease),
                    started_at = clock_timestamp(),
                    not_before = NULL, handle = NULL
                FROM locked, workflows w
                WHERE tasks.id = locked.id AND w.id = tasks.workflow_id
                RETURNING tasks.id, tasks.name, tasks.workflow_id, tasks.provider,
                          tasks.action, tasks.params, tasks.attempts, tasks.timeout,
                          w.check_mode, tasks.compensates, tasks.compensation, tasks.handle,
                          tasks.position, tasks.started_at, w.created_at AS submitted,
                          w.status AS workflow_status
            ),
            started AS (
                UPDATE workflows w
                SET status = 'Running', started_at = p_at
                WHERE w.id IN (SELECT c.workflow_id FROM claimed c
                               WHERE c.workflow_status = 'Pending')
                  AND w.status = 'Pending'
                RETURNING w.id, w.kind
            ),
            written AS (
                -- A start's event is at its start (the time its limits were checked at):
                -- with the ends' times, the log tells every attempt's time running.
                INSERT INTO events (at, type, workflow_id, task_id, data)
                SELECT x.at, x.type, x.workflow_id, x.task_id, x.data
                FROM (
                    SELECT 1 AS o, c.submitted, c.position, c.started_at AS at,
                           'TaskStatusChanged' AS type, c.workflow_id, c.id AS task_id,
                           json_build_object('task_id', c.id, 'name', c.name,
                                             'status', 'Running', 'attempt', c.attempts,
                                             'worker', p_worker) AS data
                    FROM claimed c
                    UNION ALL
                    SELECT 2, NULL, NULL, p_at, 'WorkflowStatusChanged', s.id, NULL,
                           json_build_object('workflow_id', s.id, 'status', 'Running',
                                             'kind', s.kind)
                    FROM started s
                ) x
                ORDER BY x.o, x.submitted, x.position
                RETURNING events.seq, events.type, events.workflow_id, events.task_id,
                          events.data, events.at
            )
            SELECT 'claimed', c.id, c.name, c.workflow_id, c.provider, c.action, c.params,
                   c.attempts, c.timeout, c.check_mode, c.compensates, c.compensation,
                   c.handle, NULL::bigint, NULL, NULL::json, NULL::timestamptz
            FROM claimed c
            UNION ALL
            SELECT 'event', w.task_id, NULL, w.workflow_id, NULL, NULL, NULL, NULL, NULL,
                   NULL, NULL, NULL, NULL, w.seq, w.type, w.data, w.at
            FROM written w
            WHERE p_events
        LOOP
            IF r.kind = 'claimed' THEN
                v_claimed := v_claimed + 1;
            END IF;
            RETURN NEXT r;
        END LOOP;
    END IF;

    -- Events were written: stream readers wake. Other workers wake only if there may be
    -- work this call left: it claimed all it could take, or took none while ends freed
    -- places. (A claim that took fewer than it could found nothing more claimable, by
    -- anyone: the limits are everyone's.)
    IF v_claimed > 0 OR json_array_length(p_ends) > 0 THEN
        PERFORM pg_notify('provisioning_events', '');
    END IF;
    IF (p_batch > 0 AND v_claimed >= p_batch)
       OR (p_batch = 0 AND json_array_length(p_ends) > 0) THEN
        PERFORM pg_notify('provisioning_tasks', '');
    END IF;
    RETURN;
END
$$
"""


#: Every claim and end leaves a dead version of a task row, and index entries that the
#: scans for running and ready tasks step over until a vacuum removes them: vacuum (and
#: analyze, for the planner) the tasks table after a few thousand changes, not after a
#: fifth of it changed (the default).
TASKS_AUTOVACUUM = (
    "autovacuum_vacuum_scale_factor = 0.01",
    "autovacuum_vacuum_threshold = 1000",
    "autovacuum_analyze_scale_factor = 0.02",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(SETTLED)
    op.execute(SETTLE)
    op.execute(f"ALTER TABLE tasks SET ({', '.join(TASKS_AUTOVACUUM)})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "DROP FUNCTION provisioning_settle(text, json, timestamptz, integer, double precision, "
        "integer, integer, jsonb, boolean)"
    )
    op.execute("DROP TYPE provisioning_settled")
    names = ", ".join(setting.split(" = ")[0] for setting in TASKS_AUTOVACUUM)
    op.execute(f"ALTER TABLE tasks RESET ({names})")

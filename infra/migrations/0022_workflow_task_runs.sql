-- Workflows after ingestion (issue 21): each task of a workflow run, as the tasks service did it
-- (services/tasks). The compiled state machine decides what runs; this table records what each
-- task saw, what it answered, and, for an ingest task, the child run it waits for.
CREATE TABLE public.workflow_task_run (
    workflow_run_id text NOT NULL REFERENCES public.workflow_run (id),
    task            text NOT NULL,
    -- NULL for a task the machine skipped (it never sent it, and the finish names no kinds).
    kind            text,
    -- 'running' while the task works or waits for its child run; the others are the task's end
    -- (shared/rules/workflows.py TaskStatus). A skipped task is recorded at the run's finish.
    status          text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
    variables_seen  jsonb NOT NULL DEFAULT '{}'::jsonb,
    output          jsonb,
    error           text,
    -- An ingest task's child run (its execution name, as `sourceflow run` names it) and the
    -- token the task answers when that run ends (a Run Succeeded / Failed / Cancelled event).
    child_run_id    text,
    task_token      text,
    -- When a delivery of an ingest task claimed the asking for its child run: a concurrent
    -- duplicate stands down, and a claim older than the service's claim window is taken over
    -- (its delivery died before it recorded the child).
    child_claimed_at timestamptz,
    started_at      timestamptz NOT NULL DEFAULT now(),
    ended_at        timestamptz,
    PRIMARY KEY (workflow_run_id, task),
    CHECK ((status = 'running') = (ended_at IS NULL))
);

-- The run-end event names the child run: the waiting task is found by it.
CREATE UNIQUE INDEX workflow_task_run_child ON public.workflow_task_run (child_run_id)
    WHERE child_run_id IS NOT NULL;
-- Every run's end looks for the tasks still waiting on a run of its source: the few running
-- ones, not every task ever run.
CREATE INDEX workflow_task_run_waiting ON public.workflow_task_run (child_run_id)
    WHERE status = 'running';

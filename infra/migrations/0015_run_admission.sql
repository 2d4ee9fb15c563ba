-- Admission: the runs the scheduler was asked to start (a due slot, a Run Requested event, a
-- backfill's slice) wait here until it admits them, so that no more runs are under way at once
-- than downloads can run at once (shared/rules/admission.py). A row is the run's name and what
-- it was asked for; it is admitted once its execution is started, and kept (how long each run
-- waited for admission).

CREATE TABLE public.run_admission (
    -- The execution the run is started as (shared/runtime/executions.py execution_name of
    -- source_id, started_for and nonce): a duplicate request names the same one.
    execution_name text PRIMARY KEY,
    source_id      text NOT NULL,
    -- A due slot ('scheduled'), a Run Requested event ('requested'), a backfill's slice
    -- ('backfill', named as public.backfill_slice_run records it).
    kind           text NOT NULL CHECK (kind IN ('scheduled', 'requested', 'backfill')),
    started_for    timestamptz NOT NULL,
    nonce          text NOT NULL,
    queued_at      timestamptz NOT NULL DEFAULT now(),
    admitted_at    timestamptz,
    execution_arn  text,
    CHECK ((admitted_at IS NULL) = (execution_arn IS NULL))
);
-- The line, oldest first.
CREATE INDEX run_admission_waiting ON public.run_admission (queued_at, execution_name)
    WHERE admitted_at IS NULL;
-- A source waits with one scheduled run at most: a newer slot takes the waiting one's place
-- (missed slots are not back-filled).
CREATE UNIQUE INDEX run_admission_one_waiting_slot ON public.run_admission (source_id)
    WHERE admitted_at IS NULL AND kind = 'scheduled';
-- Admitted runs that validation has not recorded yet are still under way.
CREATE INDEX run_admission_admitted ON public.run_admission (admitted_at)
    WHERE admitted_at IS NOT NULL;
-- The runs under way hold their source's lock.
CREATE INDEX source_locked_by ON public.source (locked_by) WHERE locked_by IS NOT NULL;

-- Re-specs approvals. A query a second person approved is remembered per source and query hash,
-- so the same query does not ask twice; a run waiting for approval keeps its Approve task's
-- token here, so that `sourceflow approve|reject|cancel` can answer it.

CREATE TABLE public.respecs_approval (
    source_id    text NOT NULL REFERENCES public.source (source_id),
    query_hash   text NOT NULL CHECK (query_hash ~ '^[0-9a-f]{64}$'),
    query        text NOT NULL,
    approved_by  text NOT NULL,
    approved_at  timestamptz NOT NULL DEFAULT now(),
    -- The execution name of the run the approval was given for.
    approved_in  text NOT NULL,
    PRIMARY KEY (source_id, query_hash)
);

CREATE TABLE public.run_approval (
    execution_arn text PRIMARY KEY REFERENCES public.source_run (execution_arn),
    source_id     text NOT NULL REFERENCES public.source (source_id),
    query         text NOT NULL,
    query_hash    text NOT NULL CHECK (query_hash ~ '^[0-9a-f]{64}$'),
    requested_by  text NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    task_token    text NOT NULL,
    -- When the Approval Requested event went out; NULL until it did (a retry sends it then).
    announced_at  timestamptz,
    status        text NOT NULL DEFAULT 'waiting'
                  CHECK (status IN ('waiting', 'approved', 'rejected', 'cancelled')),
    decided_by    text,
    decided_at    timestamptz,
    reason        text
);
CREATE INDEX run_approval_waiting ON public.run_approval (requested_at) WHERE status = 'waiting';

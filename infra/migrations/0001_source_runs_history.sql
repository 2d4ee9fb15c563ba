-- The control table, the run ledger and the flow history (DESIGN.md, "The source table").
-- All timestamps are UTC timestamptz.

CREATE TABLE public.source (
    source_id              text PRIMARY KEY CHECK (source_id ~ '^[A-Za-z0-9_-]{1,40}$'),
    name                   text NOT NULL,
    source_type            text NOT NULL,
    connection             jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_active              boolean NOT NULL DEFAULT true,
    batch_execution_params jsonb,
    last_modified_date     timestamptz,
    runtime_count          integer NOT NULL DEFAULT 0 CHECK (runtime_count >= 0),
    backdate_days          integer NOT NULL DEFAULT 30 CHECK (backdate_days > 0),
    -- Lease lock: held by one execution until it is released or the lease expires.
    locked_by              text,
    locked_at              timestamptz,
    lock_expires_at        timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT source_lock_complete CHECK (
        (locked_by IS NULL AND locked_at IS NULL AND lock_expires_at IS NULL)
        OR (locked_by IS NOT NULL AND locked_at IS NOT NULL AND lock_expires_at IS NOT NULL)
    )
);

-- One row per execution, keyed by its ARN so that a duplicate message finds the row its
-- first delivery wrote instead of starting the run again.
CREATE TABLE public.source_run (
    execution_arn     text PRIMARY KEY,
    execution_name    text NOT NULL,
    source_id         text NOT NULL,
    status            text NOT NULL CHECK (status IN
                          ('running', 'downloaded', 'succeeded', 'failed', 'skipped')),
    flow_type         text CHECK (flow_type IN ('normal', 'respecs', 'full_load', 'sold')),
    flow_params       jsonb,
    window_field      text CHECK (window_field IN ('last_modified', 'sold_date')),
    window_start      timestamptz,
    window_end        timestamptz,
    window_start_inclusive boolean,
    runtime_count     integer,
    records           bigint,
    bytes             bigint,
    objects           integer,
    manifest_key      text,
    max_last_modified timestamptz,
    cursor_before     timestamptz,
    cursor_after      timestamptz,
    failed_step       text,
    error             text,
    error_detail      text,
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);
CREATE INDEX source_run_source_started ON public.source_run (source_id, started_at DESC);

CREATE TABLE public.source_flow_history (
    change_id   bigserial PRIMARY KEY,
    source_id   text NOT NULL REFERENCES public.source (source_id),
    from_params jsonb,
    to_params   jsonb,
    changed_by  text NOT NULL,
    reason      text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX source_flow_history_source ON public.source_flow_history (source_id, changed_at DESC);

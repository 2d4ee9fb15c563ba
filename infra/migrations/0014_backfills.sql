-- Backfills (README, "Backfills"): a bounded range of the past loaded again in slices, each slice
-- its own run (flow 'backfill') beside the source's Normal timeline: it moves neither the cursor
-- nor landed_since, lists no landed versions and leaves the source's params alone. A person asks
-- for one and decides on one only through the functions below, which take the person from the
-- login; a range longer than the source's backfill_approval_days waits for a second person.

ALTER TABLE public.source_run DROP CONSTRAINT source_run_flow_type_check;
ALTER TABLE public.source_run ADD CONSTRAINT source_run_flow_type_check CHECK (flow_type IN
    ('normal', 'respecs', 'full_load', 'sold', 'backfill'));
-- A slice's run is found by its execution's name (and `sourceflow cancel NAME` finds any run).
CREATE INDEX source_run_execution_name ON public.source_run (execution_name);

ALTER TABLE public.source
    -- A backfill spanning more days than this waits for a second person's approval; 0: every
    -- backfill does. An administrator's setting, like the lateness allowance.
    ADD COLUMN backfill_approval_days integer NOT NULL DEFAULT 31
        CHECK (backfill_approval_days >= 0);

CREATE TABLE public.backfill (
    backfill_id     bigserial PRIMARY KEY,
    source_id       text NOT NULL REFERENCES public.source (source_id),
    window_field    text NOT NULL CHECK (window_field IN ('last_modified', 'sold_date')),
    -- The range is [range_start, range_end), in slices of slice_length (shared.rules.backfills).
    range_start     timestamptz NOT NULL,
    range_end       timestamptz NOT NULL,
    slice_length    interval NOT NULL CHECK (slice_length > interval '0'),
    reason          text NOT NULL,
    status          text NOT NULL
                    CHECK (status IN ('awaiting_approval', 'active', 'rejected', 'cancelled')),
    requested_by    text NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    -- Who approved or rejected it (a backfill that needed nobody's approval has none).
    decided_by      text,
    decided_at      timestamptz,
    decision_reason text,
    cancelled_by    text,
    cancelled_at    timestamptz,
    cancel_reason   text,
    -- A retry gives every slice a fresh count of failed runs, from this moment.
    retried_by      text,
    retried_at      timestamptz,
    CHECK (range_start < range_end)
);
CREATE INDEX backfill_source ON public.backfill (source_id, backfill_id);

-- Each execution the scheduler started for a slice, recorded before it starts it: validation
-- finds the slice by the execution's name, and the run's ledger row says how it went.
CREATE TABLE public.backfill_slice_run (
    execution_name text PRIMARY KEY,
    backfill_id    bigint NOT NULL REFERENCES public.backfill (backfill_id),
    slice_number   integer NOT NULL CHECK (slice_number >= 1),
    attempt        integer NOT NULL CHECK (attempt >= 1),
    -- The start time the execution's name carries (the scheduler's tick).
    started_at     timestamptz NOT NULL,
    UNIQUE (backfill_id, slice_number, attempt)
);

-- A person's request. SQLSTATE P0002: no such source.
CREATE FUNCTION public.backfill_request(
    for_source text, by_field text, range_from timestamptz, range_to timestamptz,
    slice_of interval, why text
) RETURNS public.backfill
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    approval_days integer;
    created public.backfill%ROWTYPE;
BEGIN
    SELECT s.backfill_approval_days INTO approval_days
      FROM public.source s WHERE s.source_id = for_source;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown source %', for_source USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO public.backfill
        (source_id, window_field, range_start, range_end, slice_length, reason, status,
         requested_by)
    VALUES (for_source, by_field, range_from, range_to, slice_of, why,
            CASE WHEN range_to - range_from > make_interval(days => approval_days)
                 THEN 'awaiting_approval' ELSE 'active' END,
            session_user)
    RETURNING * INTO created;
    RETURN created;
END $$;

-- A person's decision on a backfill: approved or rejected (while it awaits approval; the
-- requester and the superuser may not approve), cancelled (while it awaits approval or is
-- active), retried (an active one). SQLSTATE 42501: this person may not; 55000: not in a state
-- that allows it; P0002: no such backfill.
CREATE FUNCTION public.backfill_decide(which bigint, decision text, why text)
RETURNS public.backfill
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    me text := session_user;
    asked public.backfill%ROWTYPE;
    decided public.backfill%ROWTYPE;
BEGIN
    IF decision NOT IN ('approved', 'rejected', 'cancelled', 'retried') THEN
        RAISE EXCEPTION 'decision must be approved, rejected, cancelled or retried, not %', decision
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO asked FROM public.backfill b WHERE b.backfill_id = which FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no backfill %', which USING ERRCODE = 'no_data_found';
    END IF;
    IF decision IN ('approved', 'rejected') AND asked.status <> 'awaiting_approval' THEN
        RAISE EXCEPTION 'backfill % is %, not awaiting approval', which, asked.status
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF decision = 'cancelled' AND asked.status NOT IN ('awaiting_approval', 'active') THEN
        RAISE EXCEPTION 'backfill % is already %', which, asked.status
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF decision = 'retried' AND asked.status <> 'active' THEN
        RAISE EXCEPTION 'backfill % is %; only an active backfill is retried', which,
              asked.status USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Loading a long range again needs a second person; stopping one needs nobody.
    IF decision = 'approved' AND (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = me) THEN
        RAISE EXCEPTION 'the database superuser % is not a person; connect with your own login', me
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF decision = 'approved' AND asked.requested_by = me THEN
        RAISE EXCEPTION '% asked for backfill %, so a second person must approve it', me, which
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE public.backfill b
       SET status = CASE decision WHEN 'approved' THEN 'active'
                                  WHEN 'rejected' THEN 'rejected'
                                  WHEN 'cancelled' THEN 'cancelled'
                                  ELSE b.status END,
           decided_by = CASE WHEN decision IN ('approved', 'rejected') THEN me
                             ELSE b.decided_by END,
           decided_at = CASE WHEN decision IN ('approved', 'rejected') THEN now()
                             ELSE b.decided_at END,
           decision_reason = CASE WHEN decision IN ('approved', 'rejected') THEN why
                                  ELSE b.decision_reason END,
           cancelled_by = CASE WHEN decision = 'cancelled' THEN me ELSE b.cancelled_by END,
           cancelled_at = CASE WHEN decision = 'cancelled' THEN now() ELSE b.cancelled_at END,
           cancel_reason = CASE WHEN decision = 'cancelled' THEN why ELSE b.cancel_reason END,
           retried_by = CASE WHEN decision = 'retried' THEN me ELSE b.retried_by END,
           retried_at = CASE WHEN decision = 'retried' THEN now() ELSE b.retried_at END
     WHERE b.backfill_id = which
    RETURNING * INTO decided;
    RETURN decided;
END $$;

REVOKE ALL ON FUNCTION public.backfill_request(text, text, timestamptz, timestamptz, interval, text)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION public.backfill_decide(bigint, text, text) FROM PUBLIC;

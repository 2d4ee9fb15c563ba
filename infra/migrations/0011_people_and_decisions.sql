-- Who did something is the database login that did it (session_user), never a name the writer
-- chose: a person connects as themselves (a per-person login, or an IAM-authenticated one in
-- the cloud), each service as its own role. The roles and their grants are applied by
-- infra/grants.py from shared/store/privileges.py; this migration makes the attribution
-- and the two-person rule something the database enforces.

-- The flow history names the login that changed the params. The trigger runs as its owner, so
-- no role needs (or has) INSERT on the history: it cannot be written around.
CREATE OR REPLACE FUNCTION public.source_params_history() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    old_params jsonb := CASE WHEN TG_OP = 'UPDATE' THEN OLD.batch_execution_params END;
BEGIN
    IF TG_OP = 'INSERT' AND NEW.batch_execution_params IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.batch_execution_params IS NOT DISTINCT FROM old_params THEN
        RETURN NULL;
    END IF;
    INSERT INTO public.source_flow_history
        (source_id, from_params, to_params, changed_by, reason, request_id)
    VALUES (
        NEW.source_id, old_params, NEW.batch_execution_params, session_user,
        COALESCE(NULLIF(current_setting('sourceflow.change_reason', true), ''),
                 'batch_execution_params edited directly (by hand)'),
        NULLIF(current_setting('sourceflow.change_request', true), '')
    );
    RETURN NULL;
END $$;

-- A cancel request names the login that made it.
CREATE FUNCTION public.source_run_cancel_requester() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.cancel_requested_at IS DISTINCT FROM OLD.cancel_requested_at THEN
        NEW.cancel_requested_by := CASE WHEN NEW.cancel_requested_at IS NOT NULL
                                        THEN session_user END;
    ELSE
        NEW.cancel_requested_by := OLD.cancel_requested_by;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER source_run_cancel_requester BEFORE UPDATE ON public.source_run
    FOR EACH ROW EXECUTE FUNCTION public.source_run_cancel_requester();

-- Who asked for a Re-specs run is who last set the source's params (the flow history), not
-- what the asking service says.
ALTER TABLE public.run_approval ALTER COLUMN requested_by SET DEFAULT '';
CREATE FUNCTION public.run_approval_requester() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    NEW.requested_by := COALESCE(
        (SELECT h.changed_by FROM public.source_flow_history h
          WHERE h.source_id = NEW.source_id
          ORDER BY h.changed_at DESC, h.change_id DESC LIMIT 1),
        'unknown');
    RETURN NEW;
END $$;
CREATE TRIGGER run_approval_requester BEFORE INSERT ON public.run_approval
    FOR EACH ROW EXECUTE FUNCTION public.run_approval_requester();

-- Remembered approvals that a person withdrew: what was approved, by whom, and who revoked it.
CREATE TABLE public.respecs_approval_revocation (
    revocation_id bigserial PRIMARY KEY,
    source_id     text NOT NULL REFERENCES public.source (source_id),
    query_hash    text NOT NULL,
    query         text NOT NULL,
    approved_by   text NOT NULL,
    approved_at   timestamptz NOT NULL,
    approved_in   text NOT NULL,
    revoked_by    text NOT NULL,
    revoked_at    timestamptz NOT NULL DEFAULT now(),
    reason        text NOT NULL
);

-- The one way a person's decision reaches the approval tables. SQLSTATE 42501 (insufficient
-- privilege) means the person may not decide this; 55000 (not in prerequisite state) that the
-- run no longer waits; P0002 that nothing matched.
CREATE FUNCTION public.respecs_decide(execution text, decision text, why text)
RETURNS TABLE (person text, approved_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
#variable_conflict use_column
DECLARE
    me text := session_user;
    request public.run_approval%ROWTYPE;
BEGIN
    IF decision NOT IN ('approved', 'rejected', 'cancelled') THEN
        RAISE EXCEPTION 'decision must be approved, rejected or cancelled, not %', decision
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Stopping a run needs no second person; letting one rewrite data does.
    IF decision = 'approved' AND (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = me) THEN
        RAISE EXCEPTION 'the database superuser % is not a person; connect with your own login', me
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO request FROM public.run_approval a WHERE a.execution_arn = execution FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no approval was asked for run %', execution USING ERRCODE = 'no_data_found';
    END IF;
    IF request.status <> 'waiting' THEN
        RAISE EXCEPTION 'the run''s approval was already % by %', request.status, request.decided_by
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF decision = 'approved' AND request.requested_by = me THEN
        RAISE EXCEPTION '% asked for this Re-specs query, so a second person must approve it', me
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE public.run_approval a
       SET status = decision, decided_by = me, decided_at = now(), reason = why
     WHERE a.execution_arn = execution;
    IF decision = 'approved' THEN
        INSERT INTO public.respecs_approval (source_id, query_hash, query, approved_by, approved_in)
        SELECT request.source_id, request.query_hash, request.query, me, r.execution_name
          FROM public.source_run r WHERE r.execution_arn = execution
        ON CONFLICT (source_id, query_hash) DO NOTHING;
        RETURN QUERY SELECT ra.approved_by, ra.approved_at FROM public.respecs_approval ra
                      WHERE ra.source_id = request.source_id AND ra.query_hash = request.query_hash;
    ELSE
        RETURN QUERY SELECT me, NULL::timestamptz;
    END IF;
END $$;

CREATE FUNCTION public.respecs_revoke(source text, hash text, why text)
RETURNS public.respecs_approval_revocation
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    me text := session_user;
    withdrawn public.respecs_approval%ROWTYPE;
    revocation public.respecs_approval_revocation%ROWTYPE;
BEGIN
    IF (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = me) THEN
        RAISE EXCEPTION 'the database superuser % is not a person; connect with your own login', me
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM public.respecs_approval a WHERE a.source_id = source AND a.query_hash = hash
    RETURNING * INTO withdrawn;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'source % has no remembered approval of query %', source, hash
              USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO public.respecs_approval_revocation
        (source_id, query_hash, query, approved_by, approved_at, approved_in, revoked_by, reason)
    VALUES (withdrawn.source_id, withdrawn.query_hash, withdrawn.query, withdrawn.approved_by,
            withdrawn.approved_at, withdrawn.approved_in, me, why)
    RETURNING * INTO revocation;
    RETURN revocation;
END $$;

REVOKE ALL ON FUNCTION public.respecs_decide(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.respecs_revoke(text, text, text) FROM PUBLIC;

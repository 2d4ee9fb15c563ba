-- Who asked for a run with `sourceflow run`, for `sourceflow runs show`: the login that asked,
-- which the trigger below takes from the session, never a name the Run Requested event carries
-- (whoever may put events may write any name there). Keyed by the execution the scheduler starts
-- for the request, which the event's time and id name (shared/runtime/executions.py).
CREATE TABLE public.run_request (
    execution_name text PRIMARY KEY,
    source_id      text NOT NULL REFERENCES public.source (source_id),
    requested_by   text NOT NULL DEFAULT '',
    requested_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION public.run_request_requester() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    NEW.requested_by := session_user;
    NEW.requested_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER run_request_requester BEFORE INSERT ON public.run_request
    FOR EACH ROW EXECUTE FUNCTION public.run_request_requester();

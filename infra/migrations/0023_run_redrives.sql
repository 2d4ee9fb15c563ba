-- Which run redrove which (`sourceflow redrive RUN`, ops/redrives.py), for `sourceflow runs show`
-- and for validation, which runs a redrive's new run over the failed run's window and flow.
-- A failed run is redriven once (the key). `how`: 'redrive_execution' when Step Functions'
-- RedriveExecution continued the same execution (redrive_execution_name is then the failed
-- run's own), 'new_run' when a new execution was started in its place. Who redrove it is the
-- login, which the trigger takes from the session.
CREATE TABLE public.run_redrive (
    failed_execution_arn   text PRIMARY KEY REFERENCES public.source_run (execution_arn),
    redrive_execution_name text NOT NULL UNIQUE,
    how                    text NOT NULL CHECK (how IN ('redrive_execution', 'new_run')),
    redriven_by            text NOT NULL DEFAULT '',
    redriven_at            timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION public.run_redrive_by() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    NEW.redriven_by := session_user;
    NEW.redriven_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER run_redrive_by BEFORE INSERT ON public.run_redrive
    FOR EACH ROW EXECUTE FUNCTION public.run_redrive_by();

-- Per-source schedules for the scheduler, and a flow history that records every change of
-- batch_execution_params, including edits made by hand in SQL.

ALTER TABLE public.source
    ADD COLUMN schedule_interval interval CHECK (schedule_interval >= interval '1 minute'),
    ADD COLUMN schedule_cron text,
    -- The newest due slot a run was started for: a second tick in the same slot finds it taken.
    ADD COLUMN last_scheduled_slot timestamptz,
    -- When batch_execution_params last changed: a special flow resets to Normal only after a
    -- run that succeeded since then.
    ADD COLUMN params_changed_at timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT source_one_schedule CHECK (schedule_interval IS NULL OR schedule_cron IS NULL);

-- The event or request a change answered (a flow reset request's id), so a duplicate request
-- finds the change it already made.
ALTER TABLE public.source_flow_history ADD COLUMN request_id text UNIQUE;

-- sourceflow's own writers say who and why with set_config('sourceflow.changed_by', …, true);
-- anyone else's UPDATE is recorded as a hand edit by the database user.
CREATE FUNCTION public.source_params_touched() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.batch_execution_params IS DISTINCT FROM OLD.batch_execution_params THEN
        NEW.params_changed_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION public.source_params_history() RETURNS trigger LANGUAGE plpgsql AS $$
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
        NEW.source_id, old_params, NEW.batch_execution_params,
        COALESCE(NULLIF(current_setting('sourceflow.changed_by', true), ''),
                 session_user || ' (by hand)'),
        COALESCE(NULLIF(current_setting('sourceflow.change_reason', true), ''),
                 'batch_execution_params edited directly'),
        NULLIF(current_setting('sourceflow.change_request', true), '')
    );
    RETURN NULL;
END $$;

CREATE TRIGGER source_params_touched BEFORE UPDATE OF batch_execution_params ON public.source
    FOR EACH ROW EXECUTE FUNCTION public.source_params_touched();
CREATE TRIGGER source_params_history AFTER INSERT OR UPDATE OF batch_execution_params
    ON public.source FOR EACH ROW EXECUTE FUNCTION public.source_params_history();

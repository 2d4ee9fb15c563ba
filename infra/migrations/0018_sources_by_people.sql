-- Sources as commands and as code (README, "Sources as commands"): people add, edit, disable,
-- enable and delete sources with `sourceflow sources …` and `sourceflow apply`, as their own
-- logins (shared/store/privileges.py grants the operators' group the settings columns). Every
-- change of a source's settings is recorded with who made it and why, whoever made it and
-- however (by hand in SQL too), as the flow history records every change of its params.

ALTER TABLE public.source
    -- A disabled source (`sourceflow sources disable`): why, and until when. The scheduler
    -- enables it at its first tick at or after disabled_until (source_enable_due below).
    ADD COLUMN disabled_reason text,
    ADD COLUMN disabled_until timestamptz,
    -- A deleted source (`sourceflow sources delete`) keeps its row: its runs, flow history,
    -- backfills and approvals keep naming it, and its id is not given to another source.
    ADD COLUMN deleted_at timestamptz,
    ADD CONSTRAINT source_disabled_is_inactive CHECK (
        is_active = false OR (disabled_reason IS NULL AND disabled_until IS NULL)
    ),
    ADD CONSTRAINT source_deleted_is_inactive CHECK (deleted_at IS NULL OR is_active = false);
CREATE INDEX source_disabled_until ON public.source (disabled_until)
    WHERE disabled_until IS NOT NULL;

-- One row per change of a source's settings: the fields changed, each from and to.
CREATE TABLE public.source_change (
    change_id  bigserial PRIMARY KEY,
    source_id  text NOT NULL REFERENCES public.source (source_id),
    action     text NOT NULL
               CHECK (action IN ('added', 'edited', 'disabled', 'enabled', 'deleted')),
    changes    jsonb NOT NULL,
    changed_by text NOT NULL,
    reason     text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX source_change_source ON public.source_change (source_id, change_id DESC);

-- Written by the trigger alone, which runs as its owner: no role needs (or has) INSERT on
-- public.source_change, so the record cannot be written around. Who is the session's login;
-- why is what sourceflow's writers set in sourceflow.change_reason (shared/store/ledger.py).
CREATE FUNCTION public.source_settings_history() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    -- The settings people own (the cursor, the lock, the counts and the params are recorded
    -- elsewhere or not at all).
    settings CONSTANT text[] := ARRAY[
        'name', 'source_type', 'connection', 'backdate_days', 'schedule_interval',
        'schedule_cron', 'lateness_allowance', 'backfill_approval_days', 'is_active',
        'disabled_reason', 'disabled_until', 'deleted_at'];
    before jsonb := CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(OLD) ELSE '{}'::jsonb END;
    after jsonb := to_jsonb(NEW);
    setting text;
    diff jsonb := '{}'::jsonb;
    happened text;
BEGIN
    FOREACH setting IN ARRAY settings LOOP
        -- (an added source's diff lists the settings it was given)
        IF COALESCE(before -> setting, 'null') IS DISTINCT FROM (after -> setting) THEN
            diff := diff || jsonb_build_object(setting, jsonb_build_object(
                'from', COALESCE(before -> setting, 'null'), 'to', after -> setting));
        END IF;
    END LOOP;
    IF diff = '{}'::jsonb THEN
        RETURN NULL;
    END IF;
    happened := CASE
        WHEN TG_OP = 'INSERT' THEN 'added'
        WHEN NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL THEN 'deleted'
        WHEN OLD.is_active AND NOT NEW.is_active THEN 'disabled'
        WHEN NEW.is_active AND NOT OLD.is_active THEN 'enabled'
        ELSE 'edited' END;
    INSERT INTO public.source_change (source_id, action, changes, changed_by, reason)
    VALUES (NEW.source_id, happened, diff, session_user,
            COALESCE(NULLIF(current_setting('sourceflow.change_reason', true), ''),
                     'changed directly (by hand)'));
    RETURN NULL;
END $$;

CREATE TRIGGER source_settings_history
    AFTER INSERT OR UPDATE OF name, source_type, connection, backdate_days, schedule_interval,
        schedule_cron, lateness_allowance, backfill_approval_days, is_active, disabled_reason,
        disabled_until, deleted_at
    ON public.source FOR EACH ROW EXECUTE FUNCTION public.source_settings_history();

-- The scheduler enables the sources disabled until a time that has passed, and nothing else: it
-- holds no right to change is_active itself. Returns the sources it enabled.
CREATE FUNCTION public.source_enable_due() RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    due record;
BEGIN
    FOR due IN
        SELECT s.source_id, s.disabled_until FROM public.source s
         WHERE NOT s.is_active AND s.deleted_at IS NULL AND s.disabled_until <= now()
         ORDER BY s.source_id
           FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM set_config('sourceflow.change_reason', format(
            'enabled by the scheduler: disabled until %s',
            to_char(due.disabled_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')), true);
        UPDATE public.source
           SET is_active = true, disabled_reason = NULL, disabled_until = NULL, updated_at = now()
         WHERE source_id = due.source_id;
        RETURN NEXT due.source_id;
    END LOOP;
    PERFORM set_config('sourceflow.change_reason', '', true);
END $$;

REVOKE ALL ON FUNCTION public.source_enable_due() FROM PUBLIC;

-- Freshness (README, "Freshness"): a scheduled source is expected to succeed within a number of
-- its schedule periods (shared/rules/freshness.py); the scheduler announces each overdue episode
-- once, as a Source Overdue event.

-- How many schedule periods a scheduled source may go without a success: a person's setting
-- like the lateness allowance (`sourceflow sources add|edit --overdue-after-periods`, a sources
-- file's overdue_after_periods). The default is shared/runtime/catalogue.py
-- OVERDUE_AFTER_PERIODS (a unit test keeps the two equal); the bounds are
-- shared/rules/freshness.py's.
ALTER TABLE public.source
    ADD COLUMN overdue_after_periods double precision NOT NULL DEFAULT 2
        CHECK (overdue_after_periods > 1 AND overdue_after_periods <= 100);

-- The overdue episode the scheduler announced, one per source: named by its `since` (the later
-- of the source's last success and when it was added, enabled or rescheduled). A tick that finds
-- the source overdue since a moment not recorded here records it and publishes Source Overdue in
-- one transaction, so two ticks (or two schedulers) announce an episode once; the row is
-- deleted when the source is no longer overdue (a success: Source Recovered is published).
CREATE TABLE public.source_overdue (
    source_id    text PRIMARY KEY REFERENCES public.source (source_id),
    since        timestamptz NOT NULL,
    overdue_at   timestamptz NOT NULL,
    announced_at timestamptz NOT NULL DEFAULT now()
);

-- A source's last success, read for every scheduled source at every tick.
CREATE INDEX source_run_source_succeeded ON public.source_run (source_id, finished_at DESC)
    WHERE status = 'succeeded';

-- A change of overdue_after_periods is a change of a source's settings, recorded with who made
-- it and why like the others (migration 0018's trigger, given the new column).
CREATE OR REPLACE FUNCTION public.source_settings_history() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    -- The settings people own (the cursor, the lock, the counts and the params are recorded
    -- elsewhere or not at all).
    settings CONSTANT text[] := ARRAY[
        'name', 'source_type', 'connection', 'backdate_days', 'schedule_interval',
        'schedule_cron', 'lateness_allowance', 'overdue_after_periods', 'backfill_approval_days',
        'is_active', 'disabled_reason', 'disabled_until', 'deleted_at'];
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

DROP TRIGGER source_settings_history ON public.source;
CREATE TRIGGER source_settings_history
    AFTER INSERT OR UPDATE OF name, source_type, connection, backdate_days, schedule_interval,
        schedule_cron, lateness_allowance, overdue_after_periods, backfill_approval_days,
        is_active, disabled_reason, disabled_until, deleted_at
    ON public.source FOR EACH ROW EXECUTE FUNCTION public.source_settings_history();

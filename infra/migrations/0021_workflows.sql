-- Workflows after ingestion (issue 21; README "Workflows after ingestion"): each workflow's
-- versions as `sourceflow apply` registered them, the workflow's current version and schedule,
-- and its runs. A version's definition never changes once written: a changed definition is a new
-- version, with a state machine of its own (infra/workflow_machine.py compiles it), and every
-- run names the version it ran. The tasks service records each task (0022, workflow_task_run)
-- and a run's end (status, ended_at).

CREATE TABLE public.workflow_version (
    workflow          text NOT NULL CHECK (workflow ~ '^[a-z][a-z0-9_]{0,39}$'),
    version           integer NOT NULL CHECK (version >= 1),
    -- The definition as the file gave it (contracts/workflow-definition.v1.schema.json), and
    -- the hash apply compares a file's with: an equal hash is no new version.
    definition        jsonb NOT NULL,
    definition_hash   text NOT NULL,
    -- What a run of this version starts: its state machine (locally, one per version), or in
    -- the cloud the version's ARN (docs: README "Workflows after ingestion").
    state_machine_arn text NOT NULL,
    created_by        text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow, version)
);

CREATE TABLE public.workflow (
    name                text PRIMARY KEY,
    current_version     integer NOT NULL,
    -- The current version's schedule, for the scheduler (as a source's: one or neither).
    schedule_interval   interval,
    schedule_cron       text,
    -- false once an apply's file no longer lists it (never deleted: its runs keep naming it).
    enabled             boolean NOT NULL DEFAULT true,
    -- The newest slot the scheduler started a run for (as public.source's).
    last_scheduled_slot timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (name, current_version) REFERENCES public.workflow_version (workflow, version),
    CHECK (schedule_interval IS NULL OR schedule_cron IS NULL)
);

CREATE TABLE public.workflow_run (
    -- The execution's name (shared/rules/workflows.py run_name).
    id           text PRIMARY KEY,
    workflow     text NOT NULL,
    version      integer NOT NULL,
    -- The variables the run started with: the defaults and what it was given.
    variables    jsonb NOT NULL DEFAULT '{}'::jsonb,
    status       text NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'succeeded', 'failed')),
    execution_arn text NOT NULL,
    requested_by text NOT NULL DEFAULT '',
    started_at   timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz,
    FOREIGN KEY (workflow, version) REFERENCES public.workflow_version (workflow, version),
    CHECK ((status = 'running') = (ended_at IS NULL))
);
CREATE INDEX workflow_run_by_workflow ON public.workflow_run (workflow, started_at DESC);

-- Who registered a version and who started a run is the session's login (a person's, or the
-- scheduler's role), never a name the writer gives.
CREATE FUNCTION public.workflow_author() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF TG_TABLE_NAME = 'workflow_version' THEN
        NEW.created_by := session_user;
        NEW.created_at := now();
    ELSE
        NEW.requested_by := session_user;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER workflow_version_author BEFORE INSERT ON public.workflow_version
    FOR EACH ROW EXECUTE FUNCTION public.workflow_author();
CREATE TRIGGER workflow_run_requester BEFORE INSERT ON public.workflow_run
    FOR EACH ROW EXECUTE FUNCTION public.workflow_author();

-- Rows a connector could not load (e.g. a file-drop line without a usable date) are counted
-- per run, so that a run reports them instead of dropping them silently. NULL: the run was
-- downloaded before this column existed.
ALTER TABLE public.source_run ADD COLUMN malformed_records bigint;

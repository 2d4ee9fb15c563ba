-- Runs an operator cancelled: who asked, why, when; and the status they end in.
ALTER TABLE public.source_run DROP CONSTRAINT source_run_status_check;
ALTER TABLE public.source_run ADD CONSTRAINT source_run_status_check CHECK (status IN
    ('running', 'downloaded', 'succeeded', 'failed', 'skipped', 'cancelled'));
ALTER TABLE public.source_run
    ADD COLUMN cancel_requested_at timestamptz,
    ADD COLUMN cancel_requested_by text,
    ADD COLUMN cancel_reason text;

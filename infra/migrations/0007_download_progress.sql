-- How far a running download has got, written with each heartbeat (`sourceflow run --wait`).
ALTER TABLE public.source_run
    ADD COLUMN progress_records bigint,
    ADD COLUMN progress_bytes bigint;

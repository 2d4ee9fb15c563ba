-- Re-specs runs record how many rows their attribute-update query changed.
ALTER TABLE public.source_run ADD COLUMN respecs_rows bigint;

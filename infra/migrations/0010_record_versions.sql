-- Nothing lost, nothing twice (DESIGN.md, "The data guarantee"): each Normal window re-reads
-- the source's lateness allowance (plus the clock-skew allowance, shared.flows) before the
-- cursor, and skips the record versions already landed, which public.landed_version lists.
ALTER TABLE public.source
    -- How long after its last-modified stamp a record may become visible at the source and
    -- still be loaded by a Normal run. Validation refuses a negative or absurd value by name.
    ADD COLUMN lateness_allowance interval NOT NULL DEFAULT interval '10 minutes',
    -- public.landed_version lists every version landed with a stamp after this moment; a
    -- Normal window never starts before it (unless the cursor was moved back by hand).
    ADD COLUMN landed_since timestamptz;

-- What each run found: versions landed only thanks to the allowance (stamped at or before the
-- cursor the run started from), versions found again and skipped, versions stamped beyond the
-- window's end plus the clock-skew allowance (landed, never followed by the cursor).
ALTER TABLE public.source_run
    ADD COLUMN lateness_allowance interval,
    ADD COLUMN late_records bigint,
    ADD COLUMN duplicates_skipped bigint,
    ADD COLUMN future_records bigint;

-- The record versions (key digest, last-modified stamp) that runs landed, kept while a later
-- Normal window may read them again. Download writes its run's rows with the download's
-- result; unlocking keeps them when the run succeeds, deletes them when it fails, and drops the
-- ones no later window can reach. Only rows of succeeded runs count as landed.
CREATE TABLE public.landed_version (
    source_id     text NOT NULL REFERENCES public.source (source_id) ON DELETE CASCADE,
    last_modified timestamptz NOT NULL,
    key_digest    bytea NOT NULL,
    execution_arn text NOT NULL,
    PRIMARY KEY (source_id, last_modified, key_digest)
);
CREATE INDEX landed_version_execution ON public.landed_version (execution_arn);

-- Existing sources: what was landed before this migration is not listed, so the first Normal
-- window after it starts at the cursor, as before; the ones after it overlap.
UPDATE public.source SET landed_since = last_modified_date;

-- Resumable downloads (README, "Downloads longer than one invocation"): a download commits each
-- part with the position its source's stream resumes from after it, in the same transaction as
-- the versions the part landed, so that a redelivered or continued download goes on after its
-- last committed part instead of starting again.
CREATE TABLE public.download_checkpoint (
    execution_arn    text NOT NULL REFERENCES public.source_run (execution_arn),
    sequence         integer NOT NULL CHECK (sequence >= 1),
    -- The part this checkpoint committed; none when an invocation stopped with nothing landed
    -- since its last part.
    object_key       text,
    object_records   bigint,
    object_bytes     bigint,
    object_sha256    text,
    -- Where the source's stream resumes (the connector's: a page token, an object key and
    -- offset, a table key), and what the download had counted then (services/download/domain.py
    -- Tally).
    position         jsonb NOT NULL,
    tally            jsonb NOT NULL,
    download_attempt text NOT NULL,
    committed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (execution_arn, sequence),
    CHECK ((object_key IS NULL) = (object_sha256 IS NULL))
);

ALTER TABLE public.source_run
    -- Which Download task of the run the claiming delivery serves (0: the first): a delivery of
    -- an earlier task never stands a later one down.
    ADD COLUMN download_continuation integer,
    -- The deliveries that downloaded (claimed) the run: its Download invocations, continued
    -- and redelivered alike.
    ADD COLUMN download_invocations integer,
    -- What an operator should hear about the download although it worked (a partner table's
    -- key column without an index); unlocking sends them with the Run Succeeded event.
    ADD COLUMN download_warnings text[];

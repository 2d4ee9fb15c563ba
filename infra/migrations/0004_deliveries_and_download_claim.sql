-- What operators need to handle dead letters, and the claim that keeps one delivery at a time
-- downloading a run.

-- The last error each SQS message met, keyed by queue and message id (a message keeps its id
-- when the redrive policy moves it to the DLQ), so `sourceflow dlq list` can say why it is there.
CREATE TABLE public.delivery_failure (
    queue         text NOT NULL,
    message_id    text NOT NULL,
    receive_count integer NOT NULL,
    error         text NOT NULL,
    failed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, message_id)
);

-- Dead letters that can never succeed (their task is over): set aside with the reason, kept.
CREATE TABLE public.parked_message (
    queue      text NOT NULL,
    message_id text NOT NULL,
    body       text NOT NULL,
    attributes jsonb NOT NULL DEFAULT '{}'::jsonb,
    reason     text NOT NULL,
    parked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, message_id)
);

-- One delivery at a time downloads a run: the claim names the delivery (a fresh id per
-- attempt) and the SQS message it came in; heartbeats renew it, a dead attempt's claim expires.
ALTER TABLE public.source_run
    ADD COLUMN download_attempt text,
    ADD COLUMN download_message_id text,
    ADD COLUMN download_claimed_until timestamptz;

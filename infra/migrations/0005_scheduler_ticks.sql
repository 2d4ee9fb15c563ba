-- When each schedule rule last reached the scheduler, so an operator can see that ticks arrive.
CREATE TABLE public.scheduler_tick (
    rule          text PRIMARY KEY,
    last_tick_at  timestamptz NOT NULL,
    last_event_id text NOT NULL,
    handled_at    timestamptz NOT NULL DEFAULT now()
);

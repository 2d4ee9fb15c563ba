-- Vendors' concurrency limits (README, "Polite to vendors"): at most max_concurrent downloads of
-- one vendor's API (a host of connection.base_url, shared.connectors.pacing.vendor_host) read at
-- once, whatever the source and whichever worker runs it. A download holds a slot row while it
-- reads; the slots are leases (shared/store/vendor_limits.py).

-- Set by a person (`sourceflow vendors set HOST --max-concurrent N`); a host without a row is
-- not limited. Who set it is the login that did, recorded by the trigger below.
CREATE TABLE public.vendor_limit (
    host           text PRIMARY KEY
                   CHECK (host = lower(host) AND host ~ '^[^/@[:space:]]+$'
                          AND length(host) <= 300),
    max_concurrent integer NOT NULL CHECK (max_concurrent BETWEEN 1 AND 1000),
    set_by         text NOT NULL DEFAULT session_user,
    set_at         timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION public.vendor_limit_setter() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    NEW.set_by := session_user;
    NEW.set_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER vendor_limit_setter BEFORE INSERT OR UPDATE ON public.vendor_limit
    FOR EACH ROW EXECUTE FUNCTION public.vendor_limit_setter();

-- Slot 1..max_concurrent of a host, created as downloads first need them. A slot is free when
-- it has no lease or its lease has expired (a crashed worker's slot frees itself); a held slot
-- names the execution and the delivery (its download attempt) that took it, and only that
-- delivery renews (with each heartbeat) or releases it. Slots above a lowered limit are left to
-- their holders and never taken again; no row is deleted, so a holder never loses its slot to
-- a change of limit.
CREATE TABLE public.vendor_slot (
    host          text NOT NULL,
    slot          integer NOT NULL CHECK (slot BETWEEN 1 AND 1000),
    execution_arn text,
    attempt       text,
    source_id     text,
    taken_at      timestamptz,
    expires_at    timestamptz,
    PRIMARY KEY (host, slot),
    CHECK ((attempt IS NULL) = (expires_at IS NULL) AND (attempt IS NULL) = (execution_arn IS NULL))
);
CREATE INDEX vendor_slot_attempt ON public.vendor_slot (attempt) WHERE attempt IS NOT NULL;

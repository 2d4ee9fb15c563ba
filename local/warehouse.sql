-- The embedded stack's stand-in for a warehouse table that Re-specs queries update
-- (the local stack allow-lists it through RESPECS_ALLOWED_TABLES). Not a migration: in a real
-- deployment these tables belong to the data team's warehouse, not to sourceflow.
CREATE TABLE IF NOT EXISTS public.listing_attributes (
    source_id  text NOT NULL,
    listing_id text NOT NULL,
    attribute  text NOT NULL,
    value      text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, listing_id, attribute)
);

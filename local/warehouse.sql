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

-- The campaign workflow's tables (local/demo_workflows.yaml): the campaigns, whose start day a
-- workflow checks, the caches it warms and the metrics it aggregates. A workflow's sql tasks
-- reach them through the warehouse login (local/roles.py), which may touch nothing else.
CREATE TABLE IF NOT EXISTS public.campaign (
    campaign_id integer PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    starts_on   date NOT NULL,
    ends_on     date NOT NULL,
    status      text NOT NULL DEFAULT 'scheduled',
    listings    bigint
);
CREATE TABLE IF NOT EXISTS public.campaign_cache (
    campaign_id integer NOT NULL,
    warmed_at   timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS public.campaign_metrics (
    campaign_id integer PRIMARY KEY,
    listings    bigint,
    computed_at timestamptz NOT NULL
);

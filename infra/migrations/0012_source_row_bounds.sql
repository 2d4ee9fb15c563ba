-- Bounds on the JSON a source row holds (issue 16; docs/limits.md): a source's connection or
-- batch_execution_params, written by hand, may no longer be so large or so deeply nested that
-- reading it breaks the readers of every source (the scheduler's tick, `sourceflow sources
-- list`). The depth is PostgreSQL's jsonpath level: `strict $.**{33}` finds the items nested 33
-- containers deep, so a value passes with at most 32 levels. shared.rules.limits holds the same
-- numbers (STORED_JSON_MAX_DEPTH, STORED_JSON_MAX_BYTES; a unit test keeps them equal).
--
-- NOT VALID: the rows already there are not checked now, so one bad row never holds up a
-- deploy; every write from now on is checked, an UPDATE of an old row too, which is refused
-- until the row is fixed. sourceflow reads a value nested deeper than the bound as unreadable
-- and fails that source's runs by name, and the scheduler passes over a source whose row it
-- cannot write. docs/limits.md shows how to find such rows, fix them and then
-- VALIDATE CONSTRAINT. The flow history keeps its copies of old params unbounded: the change
-- that fixes a bad row records the bad value it replaces.
ALTER TABLE public.source
    ADD CONSTRAINT source_connection_bounded CHECK (
        octet_length(connection::text) <= 65536
        AND NOT jsonb_path_exists(connection, 'strict $.**{33}')
    ) NOT VALID,
    ADD CONSTRAINT source_batch_execution_params_bounded CHECK (
        octet_length(batch_execution_params::text) <= 65536
        AND NOT jsonb_path_exists(batch_execution_params, 'strict $.**{33}')
    ) NOT VALID;

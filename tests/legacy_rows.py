"""A source row as it could be written before migration 0012 bounded a source's JSON: the
integration and e2e tiers prove that sourceflow copes with one that breaks the bounds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared.store.db import Database

# The constraints of migration 0012 (absent on a database from before it).
BOUNDS = ("source_connection_bounded", "source_batch_execution_params_bounded")
COLUMNS = ("connection", "batch_execution_params")


def deeply_nested(depth: int) -> str:
    """JSON text nested `depth` levels deep."""
    return "[" * depth + "1" + "]" * depth


@contextmanager
def bounds_lifted(db: Database) -> Iterator[Any]:
    """A transaction that writes source rows as if before migration 0012: its bounds are
    dropped first and added back NOT VALID at the end, as the migration left them. Nobody sees
    the table without them."""
    with db.transaction() as cur:
        cur.execute(
            "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint"
            " WHERE conrelid = 'public.source'::regclass AND conname = ANY(%s)",
            (list(BOUNDS),),
        )
        bounds: list[dict[str, Any]] = [dict(row) for row in cur.fetchall()]
        for bound in bounds:
            cur.execute(f'ALTER TABLE public.source DROP CONSTRAINT "{bound["conname"]}"')
        yield cur
        for bound in bounds:
            definition = bound["definition"].removesuffix(" NOT VALID")
            cur.execute(
                f'ALTER TABLE public.source ADD CONSTRAINT "{bound["conname"]}" {definition}'
                " NOT VALID"
            )


def write_before_the_bounds(db: Database, source_id: str, column: str, text: str) -> None:
    """Write `text` (JSON) into the source's `column` as if before migration 0012."""
    assert column in COLUMNS, column
    with bounds_lifted(db) as cur:
        cur.execute(
            f"UPDATE public.source SET {column} = %s::jsonb WHERE source_id = %s",
            (text, source_id),
        )
        assert cur.rowcount == 1, source_id

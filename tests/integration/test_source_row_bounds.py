"""Migration 0012: a source row's connection and batch_execution_params are bounded in size and
depth by the database itself, at the same bounds sourceflow's reader holds them to."""

from __future__ import annotations

import json

import pytest

from shared.errors import PermanentError
from shared.rules.limits import STORED_JSON_MAX_BYTES, STORED_JSON_MAX_DEPTH, depth_over
from shared.store.db import Database
from tests.integration.conftest import MakeSource
from tests.legacy_rows import COLUMNS, deeply_nested


def write(db: Database, source_id: str, column: str, text: str) -> None:
    with db.transaction() as cur:
        cur.execute(
            f"UPDATE public.source SET {column} = %s::jsonb WHERE source_id = %s",
            (text, source_id),
        )


def object_of_size(size: int) -> str:
    """A JSON object of exactly `size` bytes as PostgreSQL renders jsonb."""
    padding = size - len('{"note": ""}')
    return json.dumps({"note": "x" * padding})


@pytest.mark.parametrize("column", COLUMNS)
@pytest.mark.parametrize(
    "text",
    [deeply_nested(3_000), deeply_nested(33), object_of_size(STORED_JSON_MAX_BYTES + 1)],
    ids=["3000-deep", "33-deep", "64KiB-and-a-byte"],
)
def test_a_value_past_the_bounds_is_refused_by_name(
    db: Database, make_source: MakeSource, column: str, text: str
) -> None:
    source_id = make_source()
    with pytest.raises(PermanentError) as caught:
        write(db, source_id, column, text)
    assert caught.value.error_name == "RowRejected"
    assert f'violates check constraint "source_{column}_bounded"' in str(caught.value)
    assert "[[[" not in str(caught.value) and "xxx" not in str(caught.value)


@pytest.mark.parametrize("column", COLUMNS)
def test_a_value_at_the_bounds_is_written(
    db: Database, make_source: MakeSource, column: str
) -> None:
    source_id = make_source()
    write(db, source_id, column, deeply_nested(STORED_JSON_MAX_DEPTH))
    write(db, source_id, column, object_of_size(STORED_JSON_MAX_BYTES))


@pytest.mark.parametrize("depth", range(STORED_JSON_MAX_DEPTH - 2, STORED_JSON_MAX_DEPTH + 3))
@pytest.mark.parametrize("shape", ["arrays", "objects", "empty inside"])
def test_the_database_and_the_reader_agree_on_how_deep(
    db: Database, depth: int, shape: str
) -> None:
    text = {
        "arrays": deeply_nested(depth),
        "objects": '{"a": ' * depth + "1" + "}" * depth,
        "empty inside": "[" * depth + "]" * depth,
    }[shape]
    with db.transaction() as cur:
        cur.execute("SELECT jsonb_path_exists(%s::jsonb, 'strict $.**{33}') AS over", (text,))
        over_in_sql = cur.fetchone()["over"]
    assert over_in_sql == depth_over(json.loads(text), STORED_JSON_MAX_DEPTH)

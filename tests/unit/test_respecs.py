"""The Re-specs query check: one allow-listed UPDATE with a WHERE, side-effect-free functions."""

from __future__ import annotations

import pytest

from shared.rules.respecs import InvalidRespecsQuery, check_respecs_query, parse_allowed_tables

ALLOWED = parse_allowed_tables("listing_attributes, warehouse.listing_specs")


def test_allow_list_qualifies_bare_names_with_public() -> None:
    assert {"public.listing_attributes", "warehouse.listing_specs"} == ALLOWED
    assert parse_allowed_tables("") == frozenset()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE listing_attributes SET value = 'sqm' WHERE attribute = 'area_unit'",
        "UPDATE public.listing_attributes SET value = lower(trim(value)) WHERE source_id = 'a'",
        "update WAREHOUSE.LISTING_SPECS set spec = coalesce(spec, 'n/a') where id > 10",
        "UPDATE listing_attributes a SET value = s.spec FROM warehouse.listing_specs s"
        " WHERE s.id = a.listing_id",
        "UPDATE listing_attributes SET updated_at = now() WHERE value IS NULL;",
    ],
)
def test_a_single_allow_listed_update_is_accepted(sql: str) -> None:
    query = check_respecs_query("src", sql, ALLOWED)
    assert query.table in ALLOWED


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("UPDATE listing_attributes SET", ["does not parse"]),
        ("", ["0 statements"]),
        (
            "UPDATE listing_attributes SET value = 1 WHERE true; UPDATE listing_attributes"
            " SET value = 2 WHERE true",
            ["2 statements"],
        ),
        ("DROP TABLE listing_attributes", ["a DROP statement"]),
        ("ALTER TABLE listing_attributes ADD COLUMN x int", ["an ALTER TABLE statement"]),
        ("TRUNCATE listing_attributes", ["a TRUNCATE statement"]),
        ("DELETE FROM listing_attributes WHERE true", ["a DELETE statement"]),
        ("SELECT * FROM listing_attributes", ["a SELECT statement"]),
        ("UPDATE source SET is_active = false WHERE true", ["updates public.source", "allow"]),
        ("UPDATE listing_attributes SET value = 'x'", ["no WHERE clause"]),
        (
            "WITH d AS (DELETE FROM listing_attributes RETURNING 1)"
            " UPDATE listing_attributes SET value = 'x' WHERE true",
            ["WITH clause"],
        ),
        (
            "UPDATE listing_attributes SET value = (SELECT name FROM public.source LIMIT 1)"
            " WHERE true",
            ["reads public.source"],
        ),
        ("UPDATE listing_attributes SET value = pg_sleep(1) WHERE true", ["pg_sleep()"]),
        ("UPDATE listing_attributes SET value = nextval('s') WHERE true", ["nextval()"]),
        (
            "UPDATE listing_attributes SET value = dblink.dblink_exec('x') WHERE true",
            ["dblink.dblink_exec()"],
        ),
        ("UPDATE listing_attributes SET value = $1 WHERE true", ["$n parameter"]),
    ],
)
def test_anything_else_is_refused_naming_the_source_and_the_problem(
    sql: str, words: list[str]
) -> None:
    with pytest.raises(InvalidRespecsQuery) as caught:
        check_respecs_query("src-7", sql, ALLOWED)
    message = str(caught.value)
    assert message.startswith("source 'src-7': the Re-specs query")
    for word in words:
        assert word in message
    assert caught.value.error_name == "InvalidRespecsQuery"


def test_an_empty_allow_list_refuses_every_update() -> None:
    with pytest.raises(InvalidRespecsQuery, match=r"allowed: nothing"):
        check_respecs_query("s", "UPDATE listing_attributes SET v = 1 WHERE true", frozenset())

"""The Re-specs query check: one allow-listed UPDATE with a WHERE, side-effect-free functions,
read as the server reads it (its grammar, its name resolution)."""

from __future__ import annotations

import pglast
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra import templates
from shared.rules.respecs import (
    MAX_NESTING,
    MAX_QUERY_CHARS,
    PARSER_MAJOR_VERSION,
    SAFE_FUNCTIONS,
    InvalidRespecsQuery,
    RespecsParserMismatch,
    check_respecs_query,
    check_server_major,
    parse_allowed_tables,
)
from shared.runtime.catalogue import POSTGRES_MAJOR_VERSION
from shared.store.approvals import query_hash

ALLOWED = parse_allowed_tables("listing_attributes, warehouse.listing_specs")
T = "public.listing_attributes"


def refusal(sql: str, allowed: frozenset[str] = ALLOWED) -> str:
    """The message `sql` is refused with, as a person reads it."""
    with pytest.raises(InvalidRespecsQuery) as caught:
        check_respecs_query("src-7", sql, allowed)
    assert caught.value.error_name == "InvalidRespecsQuery"
    message = str(caught.value)
    assert message.startswith("source 'src-7': the Re-specs query ")
    return message


def test_allow_list_qualifies_bare_names_with_public() -> None:
    assert {"public.listing_attributes", "warehouse.listing_specs"} == ALLOWED
    assert parse_allowed_tables("") == frozenset()


@pytest.mark.parametrize(
    "sql",
    [
        f"UPDATE {T} SET value = 'sqm' WHERE attribute = 'area_unit'",
        f"UPDATE {T} SET value = lower(trim(value)) WHERE source_id = 'a'",
        "update WAREHOUSE.LISTING_SPECS set spec = coalesce(spec, 'n/a') where id > 10",
        f"UPDATE {T} a SET value = s.spec FROM warehouse.listing_specs s WHERE s.id = a.listing_id",
        f"UPDATE {T} SET updated_at = now() WHERE value IS NULL;",
        # pg_catalog's functions by their two-part name, in either case when unquoted
        f"UPDATE {T} SET value = pg_catalog.upper(value) || UPPER(value) WHERE true",
        # the grammar's own spellings of allowed functions, and casts to built-in types
        f"UPDATE {T} SET value = substring(value from 1 for 3), note = trim(both ' ' from note),"
        " n = value::int + CAST(note AS pg_catalog.int8), d = CURRENT_DATE WHERE true",
        f"UPDATE {T} SET value = CASE WHEN n > 1 THEN 'x' ELSE 'y' END,"
        " doc = jsonb_set(doc, '{a}', to_jsonb(1)), m = greatest(a, b), k = doc->>'k'"
        " WHERE n IN (1, 2) AND m BETWEEN 1 AND 2 AND note LIKE 'a%' AND x IS DISTINCT FROM 3"
        " AND NOT (flag IS TRUE) AND n = ANY (ARRAY[1, 2])",
        f"UPDATE {T} SET (a, b) = (SELECT a, b FROM warehouse.listing_specs s WHERE s.id = 1)"
        f" WHERE EXISTS (SELECT 1 FROM {T} u WHERE u.id = 1 ORDER BY 1 LIMIT 1)",
        f"UPDATE {T} SET value = v.x FROM (VALUES (1, 'a')) AS v(id, x)"
        " JOIN warehouse.listing_specs s ON s.id = v.id WHERE v.id = listing_id",
        f"UPDATE {T} SET value = a OPERATOR(pg_catalog.||) b WHERE true",
        f"UPDATE {T} SET value = 'x' WHERE true RETURNING *",
    ],
)
def test_a_single_allow_listed_update_is_accepted(sql: str) -> None:
    query = check_respecs_query("src", sql, ALLOWED)
    assert query.table in ALLOWED


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        pytest.param(f"UPDATE {T} SET", ["does not parse"], id="parse-error"),
        pytest.param("", ["0 statements"], id="empty"),
        pytest.param(
            f"UPDATE {T} SET value = 1 WHERE true; UPDATE {T} SET value = 2 WHERE true",
            ["2 statements"],
            id="two-statements",
        ),
        pytest.param(f"DROP TABLE {T}", ["a DROP statement"], id="drop"),
        pytest.param(f"ALTER TABLE {T} ADD COLUMN x int", ["an ALTER TABLE statement"], id="alter"),
        pytest.param(f"TRUNCATE {T}", ["a TRUNCATE statement"], id="truncate"),
        pytest.param(f"DELETE FROM {T} WHERE true", ["a DELETE statement"], id="delete"),
        pytest.param(f"SELECT * FROM {T}", ["a SELECT statement"], id="select"),
        pytest.param(
            "UPDATE public.source SET is_active = false WHERE true",
            ["updates public.source", "RESPECS_ALLOWED_TABLES"],
            id="target-not-allowed",
        ),
        pytest.param(f"UPDATE {T} SET value = 'x'", ["no WHERE clause"], id="no-where"),
        pytest.param(
            f"WITH d AS (DELETE FROM {T} RETURNING 1) UPDATE {T} SET value = 'x' WHERE true",
            ["WITH clause"],
            id="with-hiding-a-write",
        ),
        pytest.param(
            f"UPDATE {T} SET value = (SELECT name FROM public.source LIMIT 1) WHERE true",
            ["reads public.source", "not allow-listed"],
            id="reads-another-table",
        ),
        pytest.param(
            f"UPDATE {T} SET value = pg_sleep(1) WHERE true", ["pg_sleep()"], id="pg_sleep"
        ),
        pytest.param(
            f"UPDATE {T} SET value = nextval('s') WHERE true", ["nextval()"], id="nextval"
        ),
        pytest.param(
            f"UPDATE {T} SET value = dblink.dblink_exec('x') WHERE true",
            ["dblink.dblink_exec()"],
            id="another-schemas-function",
        ),
        pytest.param(f"UPDATE {T} SET value = $1 WHERE true", ["$n parameter"], id="parameter"),
        # -- constructs the server may read otherwise than the checker (issue 16) --
        pytest.param(
            f"UPDATE {T} SET value = postgres.pg_catalog.upper(value) WHERE true",
            ["postgres.pg_catalog.upper()", "a database in it", "write upper(…)"],
            id="three-part-function-name",
        ),
        pytest.param(
            f"UPDATE {T} SET value = postgres.evil.upper(value) WHERE true",
            ["postgres.evil.upper()", "a database in it"],
            id="three-part-name-of-another-schema",
        ),
        pytest.param(
            f'UPDATE {T} SET value = "UPPER"(value) WHERE true',
            ['"UPPER" by a quoted name', "unquoted, e.g. upper(…)"],
            id="quoted-function-name",
        ),
        pytest.param(
            f'UPDATE {T} SET value = "upper"(value) WHERE true',
            ['"upper" by a quoted name'],
            id="quoted-lower-case-function-name",
        ),
        pytest.param(
            f'UPDATE {T} SET value = pg_catalog."upper"(value) WHERE true',
            ['"pg_catalog.upper" by a quoted name'],
            id="quoted-qualified-function-name",
        ),
        pytest.param(
            f'UPDATE {T} SET value = U&"upper"(value) WHERE true',
            ["by a quoted name"],
            id="unicode-escaped-function-name",
        ),
        pytest.param(
            f"UPDATE {T} SET value = 'é' || \"Upper\"(value) WHERE true",
            ['"Upper" by a quoted name'],
            id="quoted-name-after-non-ascii-text",
        ),
        pytest.param(
            f"UPDATE {T} SET value = JSON_VALUE(doc, '$.a') WHERE true",
            ["json_value()", "not allowed"],
            id="json_value",
        ),
        pytest.param(
            f"UPDATE {T} SET value = JSON_OBJECT('a': 1) WHERE true",
            ["SQL/JSON syntax", "jsonb_build_object"],
            id="json_object",
        ),
        pytest.param(
            f"UPDATE {T} SET value = 'x' WHERE doc IS JSON",
            ["SQL/JSON syntax"],
            id="is-json",
        ),
        pytest.param(
            f"UPDATE {T} SET value = (WITH RECURSIVE listing_attributes AS (SELECT 1 AS value)"
            " SELECT value FROM listing_attributes) WHERE true",
            ["WITH clause", "named like an allowed table"],
            id="with-recursive-in-a-subquery-named-like-an-allowed-table",
        ),
        pytest.param(
            f"UPDATE {T} SET value = 'x' WHERE id IN (WITH i AS (SELECT 1) SELECT * FROM i)",
            ["WITH clause"],
            id="with-in-a-where-subquery",
        ),
        pytest.param(
            "UPDATE listing_attributes SET value = 'x' WHERE true",
            ["table listing_attributes without its schema", "write public.listing_attributes"],
            id="unqualified-target",
        ),
        pytest.param(
            f"UPDATE {T} SET value = (SELECT value FROM listing_attributes LIMIT 1) WHERE true",
            ["without its schema", "temporary table first"],
            id="unqualified-table-read",
        ),
        pytest.param(
            f"UPDATE postgres.{T} SET value = 'x' WHERE true",
            [f"postgres.{T} with a database", f"write {T}"],
            id="three-part-table-name",
        ),
        pytest.param(
            'UPDATE public."LISTING_ATTRIBUTES" SET value = 1 WHERE true',
            ["updates public.LISTING_ATTRIBUTES, which is not allow-listed"],
            id="quoted-table-name-is-another-table",
        ),
        pytest.param(
            f"UPDATE {T} SET value = DEFAULT WHERE true",
            ["DEFAULT", "may call any function"],
            id="default",
        ),
        pytest.param(f"UPDATE {T} SET value = 'x' WHERE CURRENT OF c", ["CURRENT OF"], id="cursor"),
        pytest.param(
            f"UPDATE {T} SET value = a OPERATOR(public.||) b WHERE true",
            ["the operator public.||", "not pg_catalog's"],
            id="operator-of-another-schema",
        ),
        pytest.param(
            f"UPDATE {T} SET value = value::public.shouting WHERE true",
            ["a cast to public.shouting", "built-in"],
            id="cast-to-another-schemas-type",
        ),
        pytest.param(
            f"UPDATE {T} SET value = xmlelement(name a) WHERE true",
            ["XML syntax"],
            id="xml",
        ),
        pytest.param(
            f"UPDATE {T} SET value = x FROM upper('a') x WHERE true",
            ["a function in FROM"],
            id="function-in-from",
        ),
        pytest.param(
            f"UPDATE {T} SET value = (SELECT value FROM {T} LIMIT 1 FOR UPDATE) WHERE true",
            ["FOR UPDATE/SHARE"],
            id="row-lock-in-a-subquery",
        ),
        pytest.param(
            f"UPDATE {T} SET value = v FROM {T} TABLESAMPLE system (10) WHERE true",
            ["TABLESAMPLE"],
            id="tablesample",
        ),
        pytest.param(
            f"UPDATE {T} SET value = (SELECT lower(v) OVER () FROM {T} LIMIT 1) WHERE true",
            ["a window"],
            id="window",
        ),
    ],
)
def test_anything_else_is_refused_naming_the_source_and_the_problem(
    sql: str, words: list[str]
) -> None:
    message = refusal(sql)
    for word in words:
        assert word in message


def test_an_empty_allow_list_refuses_every_update() -> None:
    assert "allowed: nothing" in refusal(f"UPDATE {T} SET v = 1 WHERE true", frozenset())


# -- a hostile query's size ------------------------------------------------------------------


def test_a_query_longer_than_the_bound_is_refused_before_it_is_parsed() -> None:
    # (pglast's C parser crashed the whole process on a 120 KB chain of additions)
    sql = f"UPDATE {T} SET value = 1{' + 1' * 40_000} WHERE true"
    message = refusal(sql)
    assert f"is {len(sql):,} characters long; write one of at most {MAX_QUERY_CHARS:,}" in message


@pytest.mark.parametrize(
    "nesting",
    [
        "lower({})",
        "{} + 1",
        "CASE WHEN value IS NULL THEN {} END",
        f"(SELECT {{}} FROM {T} LIMIT 1)",
        f"EXISTS (SELECT 1 FROM {T} WHERE {{}})",
    ],
)
def test_the_deepest_accepted_query_can_be_hashed_and_one_deeper_is_refused(nesting: str) -> None:
    # Given an expression nested one level more at a time
    expression, deepest = "value", None
    while True:
        expression = nesting.format(expression)
        sql = f"UPDATE {T} SET value = {expression} WHERE true"
        try:
            check_respecs_query("s", sql, ALLOWED)
        except InvalidRespecsQuery as refused:
            # Then the first one too deep is refused by name, without a RecursionError
            assert f"nests more than {MAX_NESTING} levels deep" in str(refused)
            break
        deepest = sql
    # And the deepest one accepted is still one an approval can be remembered by
    assert deepest is not None
    assert len(query_hash(deepest)) == 64


# -- properties: how a name is written decides, as it does for the server ---------------------

IDENTIFIER = st.text(alphabet="abcxyzUPR_", min_size=1, max_size=8).filter(
    lambda name: not name[0].isdigit()
)
FUNCTION = st.one_of(st.sampled_from(sorted(SAFE_FUNCTIONS)), IDENTIFIER)


def written(name: str, quoted: bool) -> str:
    return f'"{name}"' if quoted else name


@given(
    schema=st.one_of(st.none(), st.just("pg_catalog"), IDENTIFIER),
    database=st.one_of(st.none(), IDENTIFIER),
    name=FUNCTION,
    quoted=st.booleans(),
)
def test_a_function_is_accepted_only_as_pg_catalogs_safe_one_unquoted(
    schema: str | None, database: str | None, name: str, quoted: bool
) -> None:
    # Given a call written with or without a schema (and a database), quoted or not
    parts = [p for p in (database if schema else None, schema) if p] + [written(name, quoted)]
    sql = f"UPDATE {T} SET value = {'.'.join(parts)}(value, value) WHERE true"
    # The server folds an unquoted name to lower case, and looks it up in pg_catalog first
    folded = name if quoted else name.lower()
    pg_catalogs = schema is None or (database is None and schema.lower() == "pg_catalog")
    safe = pg_catalogs and not quoted and folded in SAFE_FUNCTIONS
    # Then the checker accepts it exactly when it is an allowed function, read as the server does
    try:
        check_respecs_query("s", sql, ALLOWED)
        accepted = True
    except InvalidRespecsQuery:
        accepted = False
    assert accepted == safe, sql


@given(
    schema=st.one_of(st.none(), st.sampled_from(["public", "PUBLIC", "warehouse"]), IDENTIFIER),
    table=st.one_of(st.sampled_from(["listing_attributes", "LISTING_SPECS"]), IDENTIFIER),
    quoted=st.booleans(),
)
def test_a_table_is_accepted_only_named_with_its_schema_as_allow_listed(
    schema: str | None, table: str, quoted: bool
) -> None:
    # Given an update of a table written with or without its schema, quoted or not
    target = ".".join(written(p, quoted) for p in (schema, table) if p is not None)
    sql = f"UPDATE {target} SET value = 'x' WHERE true"
    # The server resolves an unqualified name through pg_temp first; a quoted one keeps its case
    as_read = (
        None if schema is None else ".".join(p if quoted else p.lower() for p in (schema, table))
    )
    # Then the checker accepts it exactly when it names an allow-listed table, schema included
    try:
        accepted_table = check_respecs_query("s", sql, ALLOWED).table
    except InvalidRespecsQuery:
        accepted_table = None
    assert accepted_table == (as_read if as_read in ALLOWED else None), sql


# -- the grammar is the server's ---------------------------------------------------------------


def test_the_pinned_parser_reads_the_grammar_of_the_declared_server_major() -> None:
    # pglast's major follows PostgreSQL's (pglast 6 parses PostgreSQL 16): a new pglast, or a
    # database moved to another major, must move POSTGRES_MAJOR_VERSION and the pin together.
    assert PARSER_MAJOR_VERSION == POSTGRES_MAJOR_VERSION, (
        f"pglast {pglast.__version__} parses PostgreSQL {PARSER_MAJOR_VERSION}, but the "
        f"database is declared PostgreSQL {POSTGRES_MAJOR_VERSION} (shared/runtime/catalogue.py)"
    )


def test_the_core_template_asks_the_cloud_for_the_declared_major() -> None:
    description = templates.load("core")["Parameters"]["DatabaseSecretArn"]["Description"]
    assert f"must run PostgreSQL {POSTGRES_MAJOR_VERSION}:" in description


def test_a_server_of_the_parsers_major_may_run_a_checked_query() -> None:
    check_server_major(POSTGRES_MAJOR_VERSION * 10_000 + 2)  # e.g. 160002, PostgreSQL 16.2


@pytest.mark.parametrize("major", [POSTGRES_MAJOR_VERSION - 1, POSTGRES_MAJOR_VERSION + 1])
def test_a_server_of_another_major_is_refused_by_name_with_the_fix(major: int) -> None:
    with pytest.raises(RespecsParserMismatch) as caught:
        check_server_major(major * 10_000)
    message = str(caught.value)
    assert caught.value.error_name == "RespecsParserMismatch"
    assert f"runs PostgreSQL {major}" in message
    assert f"PostgreSQL {POSTGRES_MAJOR_VERSION}'s grammar" in message
    assert "POSTGRES_MAJOR_VERSION" in message

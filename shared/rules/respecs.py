"""The Re-specs attribute-update query: untrusted SQL from a table column, checked with
PostgreSQL's own parser (pglast) before it is allowed anywhere near the data.

Accepted: exactly one `UPDATE … WHERE …` whose target — and every table it reads — is in the
deployment's allow-list, calling only side-effect-free functions. Everything else is refused
with a message that names the source, what is wrong and how to fix it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pglast
from pglast import ast

from shared.errors import PermanentError

# Functions without side effects that attribute updates plausibly need. Anything else
# (pg_sleep, nextval, dblink, lo_import, set_config, pg_terminate_backend, …) is refused.
SAFE_FUNCTIONS = frozenset(
    {
        "abs", "btrim", "ceil", "ceiling", "concat", "concat_ws", "date_trunc", "floor",
        "initcap", "jsonb_build_object", "jsonb_set", "left", "length", "lower", "ltrim",
        "md5", "now", "nullif", "regexp_replace", "replace", "right", "round", "rtrim",
        "split_part", "substr", "substring", "to_char", "to_date", "to_jsonb", "to_number",
        "to_timestamp", "trim", "trunc", "upper",
    }
)  # fmt: skip
_WRITES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)


class InvalidRespecsQuery(PermanentError):
    error_name = "InvalidRespecsQuery"


@dataclass(frozen=True)
class RespecsQuery:
    sql: str
    table: str  # schema-qualified target, e.g. "public.listing_attributes"


def parse_allowed_tables(text: str) -> frozenset[str]:
    """`RESPECS_ALLOWED_TABLES`: comma-separated tables; a bare name means `public.<name>`."""
    return frozenset(_qualified(name.strip().lower()) for name in text.split(",") if name.strip())


def check_respecs_query(source_id: str, sql: str, allowed_tables: frozenset[str]) -> RespecsQuery:
    def refuse(problem: str) -> InvalidRespecsQuery:
        return InvalidRespecsQuery(f"source {source_id!r}: the Re-specs query {problem}")

    try:
        statements = pglast.parse_sql(sql)
    except pglast.parser.ParseError as exc:
        where = f" at character {exc.args[1]}" if len(exc.args) > 1 and exc.args[1] else ""
        raise refuse(f"does not parse: {exc.args[0]}{where}") from None
    if len(statements) != 1:
        raise refuse(f"has {len(statements)} statements; write exactly one UPDATE")
    statement = statements[0].stmt
    if not isinstance(statement, ast.UpdateStmt):
        raise refuse(f"is {_kind(statement)}; only an UPDATE is allowed")
    if statement.withClause is not None:
        raise refuse("has a WITH clause; write a plain UPDATE (a CTE could hide another write)")
    if statement.whereClause is None:
        raise refuse("has no WHERE clause; it would rewrite every row, so say which rows")
    allowed = ", ".join(sorted(allowed_tables)) or "nothing"
    assert statement.relation is not None  # the grammar requires an UPDATE's target
    target = _table_name(statement.relation)
    if target not in allowed_tables:
        raise refuse(
            f"updates {target}, which is not allow-listed (allowed: {allowed}); "
            "add it to RESPECS_ALLOWED_TABLES if it should be"
        )
    for node in _descendants(statement):
        if isinstance(node, _WRITES):
            raise refuse(f"contains {_kind(node)} inside; only the one UPDATE may write")
        if isinstance(node, ast.RangeVar) and _table_name(node) not in allowed_tables:
            raise refuse(
                f"reads {_table_name(node)}, which is not allow-listed (allowed: {allowed})"
            )
        if isinstance(node, ast.FuncCall):
            name = _function_name(node)
            if name not in SAFE_FUNCTIONS:
                raise refuse(
                    f"calls {name}(), which is not allowed; side-effect-free functions only: "
                    + ", ".join(sorted(SAFE_FUNCTIONS))
                )
        if isinstance(node, ast.ParamRef):
            raise refuse("has a $n parameter; write the values into the query")
    return RespecsQuery(sql=sql.strip(), table=target)


def _descendants(node: Any) -> Iterator[Any]:
    """Every AST node below `node` (pglast nodes expose their fields through __slots__)."""
    for value in _children(node):
        yield value
        yield from _descendants(value)


def _children(node: Any) -> Iterator[Any]:
    values = node if isinstance(node, tuple) else [getattr(node, f) for f in node.__slots__]
    for value in values:
        if isinstance(value, tuple):
            yield from _children(value)
        elif isinstance(value, ast.Node):
            yield value


def _qualified(name: str) -> str:
    return name if "." in name else f"public.{name}"


def _table_name(relation: ast.RangeVar) -> str:
    schema = relation.schemaname or "public"
    return f"{schema}.{relation.relname}".lower()


def _function_name(call: ast.FuncCall) -> str:
    parts = [part.sval for part in call.funcname or ()]
    if len(parts) == 2 and parts[0] != "pg_catalog":
        return ".".join(parts)
    return str(parts[-1]).lower()


def _kind(node: Any) -> str:
    """`AlterTableStmt` → 'an ALTER TABLE statement', for messages people read."""
    name = type(node).__name__.removesuffix("Stmt")
    special = {"Create": "CREATE TABLE", "VariableSet": "SET", "Rule": "CREATE RULE"}
    words = special.get(name) or re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).upper()
    article = "an" if words[0] in "AEIOU" else "a"
    return f"{article} {words} statement"

"""The Re-specs attribute-update query: untrusted SQL from a table column, checked with
PostgreSQL's own parser (pglast) before it is allowed anywhere near the data.

Accepted: exactly one `UPDATE … WHERE …` whose target — and every table it reads — is in the
deployment's allow-list, calling only side-effect-free functions. Everything else is refused
with a message that names the source, what is wrong and how to fix it.

A check is only as good as its reading of the query, so the checker reads it as the server will:
- The grammar is the server's: pglast is pinned to the major version the database runs
  (`POSTGRES_MAJOR_VERSION`, proven equal to the parser's by a unit test), and unlocking will
  not run a query on a server of another major (`check_server_major`).
- Only node kinds vetted here (`_VETTED`) are accepted, and no `WITH` at any depth. Anything
  else — SQL/JSON and XML syntax, `DEFAULT`, a cursor, a function in `FROM` — is refused by name, so
  a grammar change cannot slip in a construct nobody looked at.
- Every name resolves as it does on the server: tables name their schema (an unqualified one
  could resolve to a temporary table first); functions, operators and types are pg_catalog's,
  named in at most two parts and never quoted; and unlocking runs the query with `search_path`
  pinned to `RESPECS_SEARCH_PATH`, so whatever the server looks up unqualified is pg_catalog's.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pglast
from pglast import ast
from pglast.enums.primnodes import CoercionForm

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
# Bounds on a hostile query's size, far above what an attribute update needs: past the first,
# pglast's C parser can crash the process (a 120 KB chain of additions did); past the second,
# Python's recursion (pglast's printer, which approvals hash with) fails.
MAX_QUERY_CHARS = 10_000
MAX_NESTING = 100
"""How deep one expression may nest inside the UPDATE, in parse-tree nodes."""
PARSER_MAJOR_VERSION: int = pglast.parser.get_postgresql_version()[0]
"""The PostgreSQL major whose grammar the installed pglast parses with."""
CATALOG = "pg_catalog"
RESPECS_SEARCH_PATH = f"{CATALOG}, pg_temp"
"""The statement's search_path: unqualified functions, operators and types are pg_catalog's
(the only schema the checker vouches for) and temporary objects come last, never first."""

# The node kinds an attribute update is written with. Each reads the same to the checker and
# to the server; the names inside them are checked below.
_VETTED = (
    ast.UpdateStmt, ast.RangeVar, ast.Alias, ast.ResTarget, ast.MultiAssignRef,
    ast.ColumnRef, ast.A_Star, ast.A_Const, ast.String, ast.Integer, ast.Float, ast.Boolean,
    ast.BitString, ast.A_Expr, ast.BoolExpr, ast.NullTest, ast.BooleanTest, ast.FuncCall,
    ast.NamedArgExpr, ast.TypeCast, ast.TypeName, ast.CaseExpr, ast.CaseWhen,
    ast.CoalesceExpr, ast.MinMaxExpr, ast.SQLValueFunction, ast.CollateClause,
    ast.A_Indirection, ast.A_Indices, ast.A_ArrayExpr, ast.RowExpr, ast.SubLink,
    ast.SelectStmt, ast.JoinExpr, ast.RangeSubselect, ast.SortBy,
)  # fmt: skip
_WRITES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
# What a refused node kind is called in a message, and how to do without it.
_UNVETTED = {
    "ParamRef": "has a $n parameter; write the values into the query",
    "SetToDefault": (
        "sets a column to DEFAULT, and a column's default may call any function; write the value"
    ),
    "CurrentOfExpr": "uses WHERE CURRENT OF (a cursor); say which rows with a condition",
    "LockingClause": "locks rows (FOR UPDATE/SHARE) in a subquery; drop the locking clause",
    "RangeFunction": "calls a function in FROM; read only allow-listed tables there",
    "RangeTableSample": "uses TABLESAMPLE, whose method is a function; drop it",
    "WindowDef": "uses a window (OVER …); compute the value with a subquery instead",
    "GroupingSet": "uses GROUPING SETS, ROLLUP or CUBE; group by columns",
    "GroupingFunc": "uses GROUPING(); group by columns",
    "RangeTableFunc": "uses XMLTABLE; attribute updates need none",
}
_UNVETTED_FAMILIES = {
    "Json": (
        "uses SQL/JSON syntax (JSON_OBJECT, JSON_ARRAY, IS JSON, JSON_VALUE, …), which "
        "PostgreSQL versions read differently; use jsonb_build_object, jsonb_set or the -> "
        "and ->> operators"
    ),
    "Xml": "uses XML syntax (XMLELEMENT, XMLPARSE, XMLTABLE, …); attribute updates need none",
}


class InvalidRespecsQuery(PermanentError):
    error_name = "InvalidRespecsQuery"


class RespecsParserMismatch(PermanentError):
    """The database runs another PostgreSQL major than the checker's parser reads."""

    error_name = "RespecsParserMismatch"


@dataclass(frozen=True)
class RespecsQuery:
    sql: str
    table: str  # schema-qualified target, e.g. "public.listing_attributes"


def parse_allowed_tables(text: str) -> frozenset[str]:
    """`RESPECS_ALLOWED_TABLES`: comma-separated tables; a bare name means `public.<name>`."""
    return frozenset(_qualified(name.strip().lower()) for name in text.split(",") if name.strip())


def check_server_major(server_version: int) -> None:
    """Refuse to run a checked query on a server whose grammar may read it otherwise.
    `server_version` as libpq reports it: 160002 is PostgreSQL 16.2."""
    major = server_version // 10_000
    if major != PARSER_MAJOR_VERSION:
        raise RespecsParserMismatch(
            f"the database runs PostgreSQL {major}, but the Re-specs checker reads queries with "
            f"PostgreSQL {PARSER_MAJOR_VERSION}'s grammar (pglast {pglast.__version__}); pin "
            f"the pglast major built for PostgreSQL {major} and set POSTGRES_MAJOR_VERSION "
            "(shared/runtime/catalogue.py) to match before running Re-specs queries there"
        )


def check_respecs_query(source_id: str, sql: str, allowed_tables: frozenset[str]) -> RespecsQuery:
    def refuse(problem: str) -> InvalidRespecsQuery:
        return InvalidRespecsQuery(f"source {source_id!r}: the Re-specs query {problem}")

    if len(sql) > MAX_QUERY_CHARS:
        raise refuse(f"is {len(sql):,} characters long; write one of at most {MAX_QUERY_CHARS:,}")
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
    nodes = []
    for node, depth in _descendants(statement):
        if depth > MAX_NESTING:
            raise refuse(f"nests more than {MAX_NESTING} levels deep; write it flatter")
        nodes.append(node)
    if any(isinstance(node, ast.WithClause) for node in nodes):
        raise refuse(
            "has a WITH clause; write a plain UPDATE, with subqueries if it needs them (a CTE "
            "could hide another write, and one named like an allowed table is not that table)"
        )
    if statement.whereClause is None:
        raise refuse("has no WHERE clause; it would rewrite every row, so say which rows")
    assert statement.relation is not None  # the grammar requires an UPDATE's target
    reader = _Reader(sql, allowed_tables)
    problem = reader.table_problem(statement.relation, "updates") or next(
        filter(None, map(reader.node_problem, nodes)), None
    )
    if problem:
        raise refuse(problem)
    return RespecsQuery(sql=sql.strip(), table=_table_name(statement.relation))


class _Reader:
    """One query's nodes read as the server will resolve their names: what is wrong with one."""

    def __init__(self, sql: str, allowed_tables: frozenset[str]) -> None:
        self._sql = sql
        self._allowed_tables = allowed_tables
        self._tokens = pglast.parser.scan(sql)
        self._token_starts = [token.start for token in self._tokens]
        self._checks: dict[type, Callable[[Any], str | None]] = {
            ast.RangeVar: lambda node: self.table_problem(node, "reads"),
            ast.FuncCall: self._function_problem,
            ast.A_Expr: _operator_problem,
            ast.TypeName: _type_problem,
        }

    def node_problem(self, node: Any) -> str | None:
        if isinstance(node, _WRITES):
            return f"contains {_kind(node)} inside; only the one UPDATE may write"
        if not isinstance(node, _VETTED):
            return _unvetted(node)
        check = self._checks.get(type(node))
        return check(node) if check else None

    def table_problem(self, relation: ast.RangeVar, verb: str) -> str | None:
        name = _table_name(relation)
        if relation.catalogname:
            return f"names the table {relation.catalogname}.{name} with a database; write {name}"
        if not relation.schemaname:
            return (
                f"names the table {relation.relname} without its schema, and the server would "
                f"look for a temporary table first; write {_qualified(str(relation.relname))}"
            )
        if name not in self._allowed_tables:
            allowed = ", ".join(sorted(self._allowed_tables)) or "nothing"
            fix = "; add it to RESPECS_ALLOWED_TABLES if it should be" if verb == "updates" else ""
            return f"{verb} {name}, which is not allow-listed (allowed: {allowed}){fix}"
        return None

    def _function_problem(self, call: ast.FuncCall) -> str | None:
        parts = _parts(call.funcname)
        written = ".".join(parts)
        if len(parts) > 2:
            return f"calls {written}(), a name with a database in it; write {parts[-1]}(…)"
        if call.funcformat == CoercionForm.COERCE_EXPLICIT_CALL and self._quoted(call.location):
            return (
                f'calls the function "{written}" by a quoted name; write function names '
                f"unquoted, e.g. {parts[-1].lower()}(…)"
            )
        name = parts[-1] if parts[0] == CATALOG else written
        if name not in SAFE_FUNCTIONS:
            return (
                f"calls {name}(), which is not allowed; side-effect-free functions only: "
                + ", ".join(sorted(SAFE_FUNCTIONS))
            )
        return None

    def _quoted(self, location: int | None) -> bool:
        """Whether the function name written at `location` quotes any of its parts (with no
        location, whether anything before the first parenthesis is quoted: fail closed)."""
        index = bisect_left(self._token_starts, max(location or 0, 0))
        for token in self._tokens[index:]:
            if token.name == "ASCII_40":  # its opening parenthesis: the name has ended
                return False
            if token.name == "UIDENT" or (token.name == "IDENT" and self._sql[token.start] == '"'):
                return True
        return False


def _operator_problem(expression: ast.A_Expr) -> str | None:
    return _schema_problem("the operator", _parts(expression.name), "write it unqualified")


def _type_problem(type_name: ast.TypeName) -> str | None:
    return _schema_problem(
        "a cast to", _parts(type_name.names), "cast only to pg_catalog's (built-in) types"
    )


def _schema_problem(what: str, parts: Sequence[str], fix: str) -> str | None:
    """A qualified name outside pg_catalog: its code is not what the checker vouches for."""
    if len(parts) > 1 and (len(parts) > 2 or parts[0] != CATALOG):
        return f"uses {what} {'.'.join(parts)}, which is not pg_catalog's; {fix}"
    return None


def _parts(names: Sequence[Any] | None) -> list[str]:
    return [str(part.sval) for part in names or () if isinstance(part, ast.String)]


def _unvetted(node: Any) -> str:
    kind = type(node).__name__
    for family, problem in _UNVETTED_FAMILIES.items():
        if kind.startswith(family):
            return problem
    return _UNVETTED.get(kind) or (
        f"uses {kind}, a construct the checker does not vet; write the update with columns, "
        "constants, operators, CASE, subqueries and the allowed functions"
    )


def _descendants(root: Any) -> Iterator[tuple[Any, int]]:
    """Every AST node below `root` with its depth, each before its children. A loop, not a
    recursion: a hostile query may nest deeper than Python's recursion limit."""
    stack = [(child, 1) for child in reversed(list(_children(root)))]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        stack.extend((child, depth + 1) for child in reversed(list(_children(node))))


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
    """As the parser folded it: an unquoted name is lower case already, a quoted one is not."""
    return f"{relation.schemaname or 'public'}.{relation.relname}"


def _kind(node: Any) -> str:
    """`AlterTableStmt` → 'an ALTER TABLE statement', for messages people read."""
    name = type(node).__name__.removesuffix("Stmt")
    special = {"Create": "CREATE TABLE", "VariableSet": "SET", "Rule": "CREATE RULE"}
    words = special.get(name) or re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).upper()
    article = "an" if words[0] in "AEIOU" else "a"
    return f"{article} {words} statement"

"""shared.rules.limits: a run's limits and the counts that stop it by name, repeated page
tokens, and how deep a JSON value sourceflow reads from its own database may be."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.migrate import MIGRATIONS_DIR
from shared.connectors.base import InvalidConnection, parse_connection
from shared.rules.flows import InvalidFlowParams, parse_flow_params
from shared.rules.limits import (
    DEFAULT_RUN_LIMITS,
    LIMIT_ERRORS,
    LIMIT_KEYS,
    STORED_JSON_MAX_BYTES,
    STORED_JSON_MAX_DEPTH,
    LimitExceeded,
    PageTokenRepeated,
    PageTokens,
    ReadMeter,
    RunLimits,
    UnreadableJson,
    depth_over,
    run_limits,
    stored_json,
)
from shared.runtime import contracts

DOCS = Path(__file__).resolve().parents[2] / "docs" / "limits.md"

# --- a run's limits ---------------------------------------------------------------------------


def test_without_overrides_a_source_has_the_defaults() -> None:
    assert run_limits({"base_url": "http://vendor", "dataset": "d"}) == DEFAULT_RUN_LIMITS


def test_a_source_overrides_only_the_limits_it_names() -> None:
    limits = run_limits({"limits": {"max_pages": 7, "max_bytes": 4096.0}})
    assert limits == RunLimits(
        max_page_bytes=DEFAULT_RUN_LIMITS.max_page_bytes,
        max_pages=7,
        max_records=DEFAULT_RUN_LIMITS.max_records,
        max_bytes=4096,
    )
    assert isinstance(limits.max_bytes, int)


def test_the_schema_allows_exactly_the_limits_there_are() -> None:
    common = json.loads((contracts.CONTRACTS_DIR / "common.v1.schema.json").read_text())
    allowed = common["$defs"]["run_limits"]["properties"]
    assert sorted(allowed) == sorted(LIMIT_KEYS) == sorted(LIMIT_ERRORS)
    for key in LIMIT_KEYS:  # every default is an override a source may also write
        bounds = allowed[key]
        assert bounds["minimum"] <= getattr(DEFAULT_RUN_LIMITS, key) <= bounds["maximum"], key


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        ({"max_pages": 0}, "connection.limits.max_pages"),
        ({"max_records": "many"}, "connection.limits.max_records"),
        ({"max_page_bytes": 2**40}, "connection.limits.max_page_bytes"),
        ({"max_tokens": 3}, "'max_tokens' was unexpected"),
        (["max_pages"], "connection.limits"),
    ],
)
def test_a_bad_override_is_refused_naming_the_source_and_the_key(limits: Any, problem: str) -> None:
    connection = {"base_url": "http://vendor", "dataset": "d", "limits": limits}
    with pytest.raises(InvalidConnection, match=re.escape(problem)) as caught:
        parse_connection("acme", "http_api", connection)
    assert str(caught.value).startswith("source 'acme': its http_api connection is not valid")


@pytest.mark.parametrize(
    ("count", "key", "error_name"),
    [
        (lambda meter: meter.page(), "max_pages", "TooManyPages"),
        (lambda meter: meter.record(), "max_records", "TooManyRecords"),
        (lambda meter: meter.read(1000), "max_bytes", "TooManyBytes"),
    ],
)
def test_a_count_past_its_limit_stops_the_run_by_name(
    count: Any, key: str, error_name: str
) -> None:
    # Given a source whose limit is 3 (3,000 bytes)
    limits = RunLimits(**{key: 3_000 if key == "max_bytes" else 3})
    meter = ReadMeter("acme", limits)
    # When it reaches the limit nothing happens; one more stops the run
    for _ in range(3):
        count(meter)
    with pytest.raises(LimitExceeded) as caught:
        count(meter)
    assert caught.value.error_name == error_name
    message = str(caught.value)
    assert message.startswith("source 'acme': ")
    assert f"connection.limits.{key} = 3" in message
    assert f"raise connection.limits.{key}" in message
    assert "docs/limits.md" in message


def test_a_token_sent_again_stops_the_run_and_says_which_pages() -> None:
    tokens = PageTokens("acme")
    tokens.follow("t-1", 1)
    tokens.follow("t-2", 2)
    with pytest.raises(PageTokenRepeated, match=r"page 3 sent the same next_page_token as page 1"):
        tokens.follow("t-1", 3)


def test_docs_name_every_limit_with_its_default_and_error() -> None:
    text = DOCS.read_text()
    for key in LIMIT_KEYS:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{key}`"))
        assert f"{getattr(DEFAULT_RUN_LIMITS, key):,}" in row, row
        assert f"`{LIMIT_ERRORS[key]}`" in row, row


# --- JSON in sourceflow's own database ---------------------------------------------------------


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def reference_depth(value: Any) -> int:
    """PostgreSQL's jsonpath level of the deepest item (recursive: fine at test depths)."""
    children = (
        list(value.values())
        if isinstance(value, dict)
        else value
        if isinstance(value, list)
        else []
    )
    return 1 + max(map(reference_depth, children)) if children else 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=30,
)


@given(json_values, st.integers(min_value=0, max_value=8))
def test_depth_over_agrees_with_the_levels_postgres_counts(value: Any, limit: int) -> None:
    assert depth_over(value, limit) == (reference_depth(value) > limit)


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ({}, 0), ([], 0), ({"a": 1}, 1), ([[]], 1), ({"a": [1]}, 2), (nested(32), 32)],
)
def test_depth_counts_like_postgres(value: Any, depth: int) -> None:
    assert not depth_over(value, depth)
    assert depth == 0 or depth_over(value, depth - 1)


def test_stored_json_reads_a_value_as_deep_as_the_bound() -> None:
    text = "[" * STORED_JSON_MAX_DEPTH + "1" + "]" * STORED_JSON_MAX_DEPTH
    assert stored_json(text) == json.loads(text)


@pytest.mark.parametrize("depth", [STORED_JSON_MAX_DEPTH + 1, 3_000, 100_000])
def test_stored_json_deeper_than_the_bound_is_unreadable_not_an_exception(depth: int) -> None:
    value = stored_json("[" * depth + "1" + "]" * depth)
    assert value == UnreadableJson(f"nested deeper than {STORED_JSON_MAX_DEPTH} levels")
    assert str(value) == f"<unreadable: nested deeper than {STORED_JSON_MAX_DEPTH} levels>"


def test_unreadable_params_and_connections_are_refused_by_name() -> None:
    unreadable = stored_json("[" * 3_000 + "]" * 3_000)
    with pytest.raises(InvalidFlowParams, match="batch_execution_params cannot be read: it is "):
        parse_flow_params("acme", unreadable)
    with pytest.raises(InvalidConnection, match=r"connection: is nested deeper than 32 levels"):
        parse_connection("acme", "http_api", unreadable)


def test_the_migration_bounds_source_rows_as_the_reader_does() -> None:
    migration = (MIGRATIONS_DIR / "0012_source_row_bounds.sql").read_text()
    for column in ("connection", "batch_execution_params"):
        assert f"octet_length({column}::text) <= {STORED_JSON_MAX_BYTES}" in migration
        assert f"jsonb_path_exists({column}, 'strict $.**{{{STORED_JSON_MAX_DEPTH + 1}}}')" in (
            migration
        )

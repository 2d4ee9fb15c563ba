"""Re-specs, Sold, Full Load by hand and every spelling of the params, end to end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.rules.flows import DEFAULT_LATENESS_ALLOWANCE, overlap
from tests.builders import sold_listing
from tests.e2e.harness import Harness

DAY = timedelta(days=1)


REJECTED = {
    "several-statements": "UPDATE {t} SET value = 'x' WHERE source_id = '{s}'; "
    "DELETE FROM {t} WHERE true",
    "ddl": "DROP TABLE {t}",
    "another-table": "UPDATE public.source SET is_active = false WHERE source_id = '{s}'",
    "side-effect-function": "UPDATE {t} SET value = pg_sleep(5)::text WHERE source_id = '{s}'",
    "parse-error": "UPDATE {t} SET WHERE",
    "no-where": "UPDATE {t} SET value = 'x'",
    "hidden-write-in-cte": "WITH gone AS (DELETE FROM {t} RETURNING 1) "
    "UPDATE {t} SET value = 'x' WHERE source_id = '{s}'",
    "reads-another-table": "UPDATE {t} SET value = (SELECT name FROM public.source LIMIT 1) "
    "WHERE source_id = '{s}'",
}


@pytest.mark.parametrize("shape", sorted(REJECTED))
def test_a_rejected_query_fails_in_validation_before_any_download(
    harness: Harness, shape: str
) -> None:
    # Given a Re-specs source whose query is not a single allow-listed UPDATE
    dataset = harness.new_dataset([DAY])
    cursor = datetime.now(UTC) - 2 * DAY
    source_id = harness.new_source(dataset, cursor=cursor, runtime_count=3)
    harness.seed_attributes(source_id, 2)
    sql = REJECTED[shape].format(t="public.listing_attributes", s=source_id)
    params = {"type": "Re-specs", "Sql": sql}
    harness.set_params(source_id, params)

    # When it runs
    result = harness.run(source_id)

    # Then it fails in Validate by name; nothing was downloaded and nothing else changed
    assert result.status == "FAILED" and result.error == "InvalidRespecsQuery", result
    assert (result.run["failed_step"], result.run["status"]) == ("Validate", "failed")
    assert f"source {source_id!r}: the Re-specs query" in result.run["error_detail"]
    assert result.run["records"] is None
    name = result.execution_arn.rsplit(":", 1)[1]
    assert harness.raw_objects(f"{source_id}/{name}/") == {}
    source = result.source
    assert source is not None
    assert (source["runtime_count"], source["last_modified_date"]) == (3, cursor)
    assert (source["batch_execution_params"], source["locked_by"]) == (params, None)
    assert set(harness.attributes(source_id).values()) == {"sqft"}


def test_a_query_that_fails_in_postgres_rolls_back_the_cursor_too(harness: Harness) -> None:
    # Given an allow-listed UPDATE that parses but names a column that does not exist
    dataset = harness.new_dataset([DAY])
    cursor = datetime.now(UTC) - 2 * DAY
    source_id = harness.new_source(dataset, cursor=cursor, runtime_count=3)
    harness.seed_attributes(source_id, 2)
    harness.set_params(
        source_id,
        {
            "type": "Re-specs",
            "sql": "UPDATE public.listing_attributes SET value = 'sqm', no_such_column = 1"
            f" WHERE source_id = '{source_id}'",
        },
    )

    # When it runs
    result = harness.run(source_id)

    # Then Unlock refused the success: same transaction, so the cursor did not move either
    assert result.status == "FAILED" and result.error == "RespecsQueryFailed", result
    assert result.run["failed_step"] == "Unlock"
    assert "no_such_column" in result.run["error_detail"]
    assert result.source["last_modified_date"] == cursor  # type: ignore[index]
    assert result.source["locked_by"] is None  # type: ignore[index]
    assert set(harness.attributes(source_id).values()) == {"sqft"}


UNEXPECTED_SERVER_ERRORS = {
    # (the query's SET clause, the SQLSTATE and what PostgreSQL says), for errors that once
    # escaped unlocking unnamed: the run waited out the Unlock task's timeout, with no detail
    "feature-not-supported": (
        "value = to_timestamp(value, 'TZ')::text",
        "0A000",
        'formatting field "TZ" is only supported in to_char',
    ),
    "program-limit-exceeded": (
        "value = concat(" + ", ".join(["value"] * 101) + ")",
        "54023",
        "cannot pass more than 100 arguments to a function",
    ),
}


@pytest.mark.parametrize("error", sorted(UNEXPECTED_SERVER_ERRORS))
def test_a_query_failing_with_any_server_error_fails_at_once_by_name(
    harness: Harness, error: str
) -> None:
    # Given an allow-listed UPDATE the checker accepts but PostgreSQL refuses as it runs
    set_clause, sqlstate, server_says = UNEXPECTED_SERVER_ERRORS[error]
    cursor = datetime.now(UTC) - 2 * DAY
    source_id = harness.new_source(harness.new_dataset([DAY]), cursor=cursor, runtime_count=3)
    harness.seed_attributes(source_id, 2)
    sql = f"UPDATE public.listing_attributes SET {set_clause} WHERE source_id = '{source_id}'"
    harness.set_params(source_id, {"type": "Re-specs", "sql": sql})

    # When it runs
    result = harness.run(source_id)

    # Then Unlock fails it by name with what the server said, on one line, instead of the
    # Unlock task timing out
    assert result.status == "FAILED" and result.error == "RespecsQueryFailed", result
    assert result.run["failed_step"] == "Unlock"
    detail = result.run["error_detail"]
    assert f"(SQLSTATE {sqlstate}): {server_says}" in detail and "\n" not in detail
    # And the source is unlocked, its cursor and its attributes as they were
    assert result.source is not None
    assert (result.source["last_modified_date"], result.source["locked_by"]) == (cursor, None)
    assert set(harness.attributes(source_id).values()) == {"sqft"}


def test_sold_filters_on_sold_date_from_january_and_leaves_the_cursor(harness: Harness) -> None:
    # Given sales in 2020, 2021 (one at midnight on 1 January), 2023, and unsold records
    now = datetime.now(UTC)
    dataset = harness.new_dataset([DAY, 2 * DAY])  # two unsold, recently modified
    harness.vendor.put(
        dataset,
        [
            sold_listing(dataset, 10, datetime(2020, 12, 31, 23, 59, 59, tzinfo=UTC)),
            sold_listing(dataset, 11, datetime(2021, 1, 1, tzinfo=UTC)),
            sold_listing(dataset, 12, datetime(2021, 6, 1, tzinfo=UTC)),
            sold_listing(dataset, 13, datetime(2023, 3, 3, tzinfo=UTC)),
        ],
    )
    cursor = now - 3 * DAY
    source_id = harness.new_source(
        dataset, cursor=cursor, runtime_count=3, params={"type": "Sold", "year": 2021}
    )

    # When a Sold run for 2021 runs
    sold = harness.run(source_id)

    # Then it loads the three sold since 1 January 2021 and leaves the LMD cursor alone
    assert sold.status == "SUCCEEDED", sold
    assert (sold.run["flow_type"], sold.run["window_field"]) == ("sold", "sold_date")
    assert sold.run["window_start"] == datetime(2021, 1, 1, tzinfo=UTC)
    assert sold.run["records"] == 3
    assert sold.source["last_modified_date"] == cursor  # type: ignore[index]
    assert sold.run["cursor_after"] == cursor

    # And a Normal run afterwards starts from the same cursor (less the overlap)
    harness.set_params(source_id, {"flow_type": "Normal"})
    normal = harness.run(source_id)
    assert normal.status == "SUCCEEDED", normal
    assert normal.run["window_start"] == cursor - overlap(DEFAULT_LATENESS_ALLOWANCE)
    assert normal.run["records"] == 2


def test_sold_without_a_year_starts_on_1_january_of_the_run_year(harness: Harness) -> None:
    dataset = harness.new_dataset([])
    harness.vendor.put(dataset, [sold_listing(dataset, 1, datetime(2021, 6, 1, tzinfo=UTC))])
    source_id = harness.new_source(dataset, runtime_count=3, params={"type": "SOLD"})
    result = harness.run(source_id)
    assert result.status == "SUCCEEDED", result
    run_year = result.run["window_end"].year
    assert result.run["window_start"] == datetime(run_year, 1, 1, tzinfo=UTC)
    assert result.run["records"] == 0


def test_full_load_written_by_hand_goes_back_backdate_days(harness: Harness) -> None:
    # Given a long-running source with a cursor, switched to Full Load by an operator
    now = datetime.now(UTC)
    dataset = harness.new_dataset([DAY, 5 * DAY, 12 * DAY, 40 * DAY], now=now)
    source_id = harness.new_source(
        dataset,
        cursor=now - 2 * DAY,
        runtime_count=7,
        backdate_days=14,
        params={"type": "Full Load"},
    )
    result = harness.run(source_id)
    assert result.status == "SUCCEEDED", result
    assert result.run["flow_type"] == "full_load"
    assert result.run["window_end"] - result.run["window_start"] == timedelta(days=14)
    assert result.run["records"] == 3


SPELLINGS = [
    ({"flow_type": "Normal"}, "normal", {"flow_type": "Normal"}),
    ({"type": "NORMAL"}, "normal", {"flow_type": "Normal"}),
    ({"type": "Full Load"}, "full_load", {"flow_type": "Full Load"}),
    ({"type": "Sold"}, "sold", {"flow_type": "Sold"}),
    ({"type": "SOLD", "year": 2022}, "sold", {"flow_type": "Sold", "year": 2022}),
    ({"type": "Re-specs", "Sql": "{sql}"}, "respecs", {"flow_type": "Re-specs", "sql": "{sql}"}),
    ({"type": "RE-SPECS", "sql": "{sql}"}, "respecs", {"flow_type": "Re-specs", "sql": "{sql}"}),
    ({}, "normal", {"flow_type": "Normal"}),
]


@pytest.mark.parametrize(("written", "flow_type", "canonical"), SPELLINGS, ids=str)
def test_every_spelling_runs_and_is_recorded_canonically(
    harness: Harness, written: dict[str, Any], flow_type: str, canonical: dict[str, Any]
) -> None:
    dataset = harness.new_dataset([DAY])
    source_id = harness.new_source(dataset, runtime_count=3, cursor=datetime.now(UTC) - 2 * DAY)
    sql = f"UPDATE public.listing_attributes SET value = 'x' WHERE source_id = '{source_id}'"

    def fill(params: dict[str, Any]) -> dict[str, Any]:
        return {k: v.format(sql=sql) if isinstance(v, str) else v for k, v in params.items()}

    harness.set_params(source_id, fill(written))
    result = harness.run(source_id)
    assert result.status == "SUCCEEDED", result
    assert result.run["flow_type"] == flow_type
    assert result.run["flow_params"] == fill(canonical)

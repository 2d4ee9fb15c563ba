"""Hostile input on the embedded stack (issue 16; docs/limits.md): a vendor's hostile pages end
the run at once with a named error; a drop's bad lines are counted and the rest loads; a source
row too deep to read fails its own runs by name and keeps neither the scheduler nor the
operator's command from the others."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.builders import listing
from tests.e2e.harness import Harness, RunResult
from tests.legacy_rows import bounds_lifted, deeply_nested, write_before_the_bounds

DAY = timedelta(days=1)


def outcome(result: RunResult) -> tuple[Any, ...]:
    """What a failed assertion on a run says: how it ended, and why."""
    run = result.run
    return (
        result.status,
        result.error,
        run.get("status"),
        run.get("error"),
        run.get("error_detail"),
        run.get("records"),
        run.get("malformed_records"),
    )


def assert_failed_at_once(result: RunResult, error: str) -> None:
    """Failed in Download by `error`, reported by the first delivery (not given up on after
    retries, not timed out), the source unlocked with its cursor where it was."""
    assert (result.status, result.error) == ("FAILED", error), outcome(result)
    run = result.run
    assert (run["status"], run["failed_step"], run["error"]) == ("failed", "Download", error)
    assert "gave up after" not in run["error_detail"]
    assert result.source is not None and result.source["locked_by"] is None


def vendor_source(harness: Harness, records: int, **fault: Any) -> tuple[str, datetime]:
    """A Normal source a day behind a vendor dataset of `records` new records, whose pages
    misbehave as `fault` says; returns it and its cursor."""
    now = datetime.now(UTC)
    dataset = harness.new_dataset([DAY / 10] * records, now=now)
    cursor = now - DAY
    source_id = harness.new_source(dataset, cursor=cursor, runtime_count=3)
    harness.vendor.fault(dataset, **fault)
    return source_id, cursor


def test_a_gzip_page_that_inflates_to_300_mb_ends_the_run_at_its_limit(harness: Harness) -> None:
    # Given a vendor whose page is about 300 KB on the wire and 300 MB inflated
    source_id, cursor = vendor_source(harness, 3, page_mode="gzip_bomb", inflated_bytes=300_000_000)
    # When the source runs
    result = harness.run(source_id)
    # Then the download stopped at the page limit, by name
    assert_failed_at_once(result, "PageTooLarge")
    assert "page 1 inflates to more than 33,554,432 bytes" in result.run["error_detail"]
    assert "connection.limits.max_page_bytes" in result.run["error_detail"]
    assert result.source["last_modified_date"] == cursor  # type: ignore[index]


def test_a_page_token_that_never_changes_ends_the_run_on_the_second_page(
    harness: Harness,
) -> None:
    # Given a vendor that serves its first page, and its token, whatever token it is asked for
    source_id, _ = vendor_source(harness, 5, page_mode="repeated_token")
    harness.set_page_size(source_id, 2)
    # When the source runs
    result = harness.run(source_id)
    # Then the token sent again stopped it at once
    assert_failed_at_once(result, "PageTokenRepeated")
    assert "page 2 sent the same next_page_token as page 1" in result.run["error_detail"]


def test_a_page_that_is_not_json_ends_the_run_by_name(harness: Harness) -> None:
    source_id, _ = vendor_source(harness, 2, page_mode="not_json")
    result = harness.run(source_id)
    assert_failed_at_once(result, "MalformedPage")
    assert "page 1 from the vendor is not JSON" in result.run["error_detail"]
    assert "<html>" not in result.run["error_detail"]


def test_records_whose_dates_do_not_parse_are_counted_and_the_run_succeeds(
    harness: Harness,
) -> None:
    # Given a vendor whose records' last_modified is no date
    source_id, cursor = vendor_source(harness, 4, page_mode="bad_dates")
    # When the source runs
    result = harness.run(source_id)
    # Then every record is counted as malformed, none landed, and the cursor stays
    assert result.status == "SUCCEEDED", outcome(result)
    assert (result.run["records"], result.run["malformed_records"]) == (0, 4)
    manifest, _ = harness.raw_output(result)
    assert manifest["malformed_records"]["examples"][0] == (
        "record 1: has no usable last-modified date"
    )
    assert result.source["last_modified_date"] == cursor  # type: ignore[index]


def drop_source(harness: Harness, drop_format: str, **field_names: str) -> tuple[str, str]:
    """A Normal source over a prefix of its own in the partner's drops bucket, a day behind;
    returns it and the prefix."""
    prefix = f"{harness.unique_name()}/"
    source_id = harness.new_source(
        prefix.rstrip("/"),
        source_type="s3_files",
        connection=harness.partner.drops_connection(prefix, drop_format, **field_names),
        cursor=datetime.now(UTC) - DAY,
        runtime_count=3,
    )
    return source_id, prefix


def put_object(harness: Harness, key: str, body: bytes) -> None:
    harness.aws("s3").put_object(Bucket=harness.partner.drops_bucket, Key=key, Body=body)


def test_a_drop_line_nested_100k_deep_is_counted_and_fails_no_run(harness: Harness) -> None:
    # Given a JSON-lines drop whose middle line is nested 100,000 levels deep
    source_id, prefix = drop_source(harness, "jsonl")
    now = datetime.now(UTC)
    good = [listing(prefix, index, now - DAY / 10) for index in range(2)]
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    put_object(
        harness,
        f"{prefix}drop-001.jsonl",
        b"\n".join([json.dumps(good[0]).encode(), deep, json.dumps(good[1]).encode()]) + b"\n",
    )
    # When the source runs, and runs again
    first = harness.run(source_id)
    second = harness.run(source_id)
    # Then both succeed: the line is counted each time, the others load once
    assert first.status == "SUCCEEDED", outcome(first)
    assert (first.run["records"], first.run["malformed_records"]) == (2, 1)
    manifest, _ = harness.raw_output(first)
    [example] = manifest["malformed_records"]["examples"]
    assert example.startswith(f"s3://{harness.partner.drops_bucket}/{prefix}drop-001.jsonl line 2")
    assert "is not JSON (depth limit exceeded" in example
    assert second.status == "SUCCEEDED", outcome(second)
    assert (second.run["records"], second.run["malformed_records"]) == (0, 1)


def test_a_byte_not_utf8_in_a_quoted_csv_field_spoils_its_row_only(harness: Harness) -> None:
    # Given a CSV drop whose second row holds a Latin-1 byte in a field spanning lines, its
    # closing quote on a line of its own
    source_id, prefix = drop_source(harness, "csv")
    stamp = listing(prefix, 0, datetime.now(UTC) - DAY / 10)["last_modified"]
    body = (
        f'id,last_modified,note\nL1,{stamp},"fine"\nL2,{stamp},"caf'.encode()
        + b'\xe9\n"\n'
        + f'L3,{stamp},plain\nL4,{stamp},"two\nlines"\nL5,{stamp},plain\n'.encode()
    )
    put_object(harness, f"{prefix}drop-001.csv", body)
    # When the source runs
    result = harness.run(source_id)
    # Then that row alone is malformed and the rest of the drop loads
    assert result.status == "SUCCEEDED", outcome(result)
    _, records = harness.raw_output(result)
    assert sorted(record["id"] for record in records) == ["L1", "L3", "L4", "L5"]
    assert result.run["malformed_records"] == 1


@pytest.fixture
def deep_params_source(harness: Harness) -> Any:
    """A source whose batch_execution_params were written 3,000 levels deep before migration
    0012, due every minute; taken off the schedule afterwards (the session shares it)."""
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    harness.set_schedule(source_id, interval="1 minute")
    write_before_the_bounds(harness.db, source_id, "batch_execution_params", deeply_nested(3_000))
    yield source_id
    with bounds_lifted(harness.db) as cur:
        cur.execute(
            "UPDATE public.source SET is_active = false, schedule_interval = NULL"
            " WHERE source_id = %s",
            (source_id,),
        )


def test_a_source_row_too_deep_to_read_breaks_neither_the_tick_nor_the_command(
    harness: Harness, deep_params_source: str
) -> None:
    bad = deep_params_source
    # Given a good source due every minute beside the bad one
    good = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    harness.set_schedule(good, interval="1 minute")
    ticked_at = datetime.now(UTC)

    # When the schedule ticks
    harness.tick()

    # Then the good source's run started and succeeded; the bad one got none, and the tick was
    # handled without a failed delivery
    [execution] = harness.wait_for_executions(good, 1)
    assert harness.finish(execution["executionArn"], good).status == "SUCCEEDED"
    assert harness.executions_of(bad) == []
    with harness.db.transaction() as cur:
        cur.execute(
            "SELECT error FROM public.delivery_failure WHERE queue LIKE %s AND failed_at >= %s",
            ("%scheduler%", ticked_at),
        )
        assert cur.fetchall() == []

    # And the operator's command lists and shows it, saying what is wrong, without a traceback
    listed = harness.sourceflow("sources", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    flows = {row["source_id"]: row["flow"] for row in json.loads(listed.stdout)}
    assert (flows[good], flows[bad]) == ("Normal", "INVALID PARAMS")
    shown = harness.sourceflow("sources", "show", bad, "--json")
    assert shown.returncode == 0, shown.stderr
    source = json.loads(shown.stdout)["source"]
    assert source["batch_execution_params"] == "<unreadable: nested deeper than 32 levels>"
    assert "batch_execution_params cannot be read" in source["problems"][0]
    table = harness.sourceflow("sources", "show", bad)
    assert table.returncode == 0 and "Traceback" not in table.stdout + table.stderr

    # And the operator may ask for its run, which fails at once, in validation, by name
    asked = harness.sourceflow("run", bad)
    assert asked.returncode == 0, asked.stderr
    assert f"run requested for {bad}" in asked.stdout
    [execution] = harness.wait_for_executions(bad, 1)
    result = harness.finish(execution["executionArn"], bad)
    assert (result.status, result.run["error"]) == ("FAILED", "InvalidFlowParams"), outcome(result)
    assert result.run["failed_step"] == "Validate"

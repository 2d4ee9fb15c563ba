"""Every flow for every source type, end to end on the embedded stack: the vendor's HTTP API,
a partner's CSV file drops in S3 (with field names of their own), and a partner's PostgreSQL
table. Each test checks the ledger, the cursor and what the raw bucket holds."""

from __future__ import annotations

import json
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.rules.flows import DEFAULT_LATENESS_ALLOWANCE, RESPECS_WINDOW_START, overlap
from shared.timefmt import isoformat
from tests.builders import listing, sold_listing, years_ago
from tests.e2e.harness import Harness, RunResult
from tests.e2e.harness.source_types import KINDS, PartnerTable, SourceData, VendorApi, new_source

DAY = timedelta(days=1)


@pytest.fixture(params=sorted(KINDS))
def data(request: pytest.FixtureRequest, harness: Harness) -> SourceData:
    return KINDS[request.param](harness, harness.unique_name())


def loaded(harness: Harness, data: SourceData, result: RunResult) -> list[str]:
    """The ids of the records the run wrote to the raw bucket, after checking the manifest
    and that the records keep the source's own field names."""
    manifest, records = harness.raw_output(result)
    assert manifest["records"] == result.run["records"] == len(records)
    assert manifest["malformed_records"] == {"count": 0, "examples": []}
    for record in records:
        assert {data.id_field, data.modified_field, "price"} <= set(record)
    return sorted(record[data.id_field] for record in records)


def ids(data: SourceData, *indexes: int) -> list[str]:
    return sorted(listing(data.name, index, datetime.now(UTC))["id"] for index in indexes)


def whole_seconds() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_the_first_run_is_a_full_load_over_the_backdate_days(
    harness: Harness, data: SourceData
) -> None:
    # Given a never-run source with three records inside ten days and two older ones
    now = whole_seconds()
    ages = [DAY, 3 * DAY, 9 * DAY, 11 * DAY, 400 * DAY]
    data.put([listing(data.name, index, now - age) for index, age in enumerate(ages)])
    source_id = new_source(harness, data, backdate_days=10)

    # When it runs
    result = harness.run(source_id)

    # Then it was a Full Load of the last ten days, and the cursor is the newest record's date
    assert result.status == "SUCCEEDED", result
    run = result.run
    assert (run["status"], run["flow_type"], run["records"]) == ("succeeded", "full_load", 3)
    assert run["window_end"] - run["window_start"] == timedelta(days=10)
    assert result.source is not None
    assert result.source["last_modified_date"] == run["cursor_after"] == now - DAY
    assert loaded(harness, data, result) == ids(data, 0, 1, 2)


def test_normal_runs_load_what_changed_since_the_cursor(harness: Harness, data: SourceData) -> None:
    # Given a Normal source with a cursor two days back and two records modified since
    now = whole_seconds()
    ages = [5 * DAY, 3 * DAY, DAY, DAY / 2]
    data.put([listing(data.name, index, now - age) for index, age in enumerate(ages)])
    cursor = now - 2 * DAY
    source_id = new_source(
        harness, data, cursor=cursor, runtime_count=3, params={"flow_type": "Normal"}
    )
    first = harness.run(source_id)
    assert first.status == "SUCCEEDED", first
    assert (first.run["flow_type"], first.run["records"]) == ("normal", 2)
    assert (first.run["window_start"], first.run["window_start_inclusive"]) == (
        cursor - overlap(DEFAULT_LATENESS_ALLOWANCE),
        False,
    )
    assert first.run["cursor_after"] == now - DAY / 2
    assert loaded(harness, data, first) == ids(data, 2, 3)

    # When an old record changes and a new one arrives, and the source runs again
    changed_at = whole_seconds()
    data.put([listing(data.name, 0, changed_at, price=1), listing(data.name, 9, changed_at)])
    second = harness.run(source_id)

    # Then exactly those two are loaded, from the first run's cursor, and the cursor follows
    assert second.status == "SUCCEEDED", second
    assert second.run["cursor_before"] == now - DAY / 2
    assert second.run["window_start"] == now - DAY / 2 - overlap(DEFAULT_LATENESS_ALLOWANCE)
    assert second.run["records"] == 2
    assert loaded(harness, data, second) == ids(data, 0, 9)
    assert second.source is not None
    assert second.source["last_modified_date"] == second.run["cursor_after"] == changed_at
    assert second.source["runtime_count"] == 5


def test_respecs_reloads_since_1990_and_applies_its_update(
    harness: Harness, data: SourceData
) -> None:
    # Given a source with a recent cursor, records from 1995 on, and attribute rows to re-spec
    now = whole_seconds()
    ages = [years_ago(30), years_ago(15), years_ago(2), 3 * DAY, DAY]
    data.put([listing(data.name, index, now - age) for index, age in enumerate(ages)])
    cursor = now - 2 * DAY
    source_id = new_source(harness, data, cursor=cursor, runtime_count=3)
    harness.seed_attributes(source_id, 3)
    sql = (
        "UPDATE public.listing_attributes SET value = 'sqm', updated_at = now()"
        f" WHERE source_id = '{source_id}' AND attribute = 'area_unit'"
    )
    harness.set_params(source_id, {"type": "RE-SPECS", "Sql": sql})

    # When it runs
    result = harness.run(source_id)

    # Then everything since 1990 is reloaded, the update applied, the cursor advanced
    assert result.status == "SUCCEEDED", result
    run = result.run
    assert (run["flow_type"], run["records"], run["respecs_rows"]) == ("respecs", 5, 3)
    assert run["flow_params"] == {"flow_type": "Re-specs", "sql": sql}
    assert (run["window_start"], run["window_start_inclusive"]) == (RESPECS_WINDOW_START, True)
    assert loaded(harness, data, result) == ids(data, 0, 1, 2, 3, 4)
    assert result.source is not None
    assert run["cursor_before"] == cursor
    assert result.source["last_modified_date"] == run["cursor_after"] == now - DAY
    assert set(harness.attributes(source_id).values()) == {"sqm"}


def test_sold_loads_sales_since_1_january_and_leaves_the_cursor(
    harness: Harness, data: SourceData
) -> None:
    # Given two unsold records, and sales in 2020, 2021 (one at midnight on 1 January) and 2023
    now = whole_seconds()
    data.put(
        [
            listing(data.name, 0, now - DAY),
            listing(data.name, 1, now - 2 * DAY),
            sold_listing(data.name, 10, datetime(2020, 12, 31, 23, 59, 59, tzinfo=UTC)),
            sold_listing(data.name, 11, datetime(2021, 1, 1, tzinfo=UTC)),
            sold_listing(data.name, 12, datetime(2021, 6, 1, tzinfo=UTC)),
            sold_listing(data.name, 13, datetime(2023, 3, 3, tzinfo=UTC)),
        ]
    )
    cursor = now - 3 * DAY
    source_id = new_source(
        harness, data, cursor=cursor, runtime_count=3, params={"type": "Sold", "year": 2021}
    )

    # When it runs
    result = harness.run(source_id)

    # Then the three sold since 1 January 2021 are loaded and the LMD cursor is untouched
    assert result.status == "SUCCEEDED", result
    run = result.run
    assert (run["flow_type"], run["window_field"], run["records"]) == ("sold", "sold_date", 3)
    assert run["window_start"] == datetime(2021, 1, 1, tzinfo=UTC)
    assert loaded(harness, data, result) == ids(data, 11, 12, 13)
    assert result.source is not None
    assert result.source["last_modified_date"] == run["cursor_after"] == cursor


def test_malformed_rows_of_a_drop_are_counted_and_described_not_dropped(harness: Harness) -> None:
    # Given a JSON-lines drop with two good rows among three that cannot be placed in a window
    now = whole_seconds()
    prefix = f"{harness.unique_name()}/"
    partner = harness.partner
    lines = [
        {"id": "A", "last_modified": isoformat(now - DAY)},
        "{oops",
        {"id": "B"},
        {"id": "C", "last_modified": "yesterday"},
        {"id": "D", "last_modified": isoformat(now - DAY / 2)},
    ]
    body = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    harness.aws("s3").put_object(
        Bucket=partner.drops_bucket, Key=f"{prefix}listings.jsonl", Body=body.encode()
    )
    source_id = harness.new_source(
        prefix.rstrip("/"),
        source_type="s3_files",
        connection=partner.drops_connection(prefix, "jsonl"),
        cursor=now - 2 * DAY,
        runtime_count=3,
    )

    # When it runs
    result = harness.run(source_id)

    # Then the good rows are loaded, and the others are counted in the ledger and described in
    # the manifest and the download log
    assert result.status == "SUCCEEDED", result
    assert (result.run["records"], result.run["malformed_records"]) == (2, 3)
    manifest, records = harness.raw_output(result)
    assert [record["id"] for record in records] == ["A", "D"]
    where = f"s3://{partner.drops_bucket}/{prefix}listings.jsonl"
    assert manifest["malformed_records"] == {
        "count": 3,
        "examples": [
            f"{where} line 2: is not JSON (unexpected character, expected a string key: line 1 "
            "column 2 (char 1))",
            f"{where} line 3: has no last_modified",
            f"{where} line 4: last_modified = 'yesterday' is not an ISO-8601 date, or date-time "
            "with a zone",
        ],
    }
    assert any(
        "malformed rows not loaded" in text and source_id in text
        for text in _logs(harness, "download-*.log")
    )


def test_secret_values_never_reach_the_ledger_the_messages_the_raw_bucket_or_the_logs(
    harness: Harness,
) -> None:
    # Given a postgres source whose password is the partner reader's, and an http_api source
    # whose API key is a secret of its own
    now = whole_seconds()
    password = harness.partner.reader_password
    api_key = f"key-{uuid.uuid4().hex}"
    table = PartnerTable(harness, harness.unique_name())
    table.put([listing(table.name, 0, now - DAY)])
    vendor = VendorApi(harness, harness.unique_name())
    vendor.put([listing(vendor.name, 0, now - DAY)])
    key_secret = harness.source_secret(harness.source_id_of(vendor.name), "api-key", api_key)
    with_key = {**vendor.connection(), "api_key_secret": key_secret}
    pg_source = new_source(harness, table, runtime_count=3, cursor=now - 2 * DAY)
    http_source = harness.new_source(
        vendor.name, connection=with_key, runtime_count=3, cursor=now - 2 * DAY
    )

    # When both run, and the http_api source runs once more while the vendor refuses the key
    runs = [harness.run(pg_source), harness.run(http_source)]
    harness.vendor.fault(vendor.name, fail_status=401)
    refused = harness.run(http_source)

    # Then the runs went as expected
    assert [run.status for run in runs] == ["SUCCEEDED", "SUCCEEDED"], runs
    assert (refused.error, refused.run["failed_step"]) == ("InvalidCredentials", "Download")
    assert key_secret in refused.run["error_detail"]

    # And neither secret value is anywhere sourceflow writes
    sfn = harness.aws("stepfunctions")
    every_run = [*runs, refused]
    written = {
        "ledger or source rows": [str(run.run) + str(run.source) for run in every_run],
        "execution histories (messages)": [
            str(sfn.get_execution_history(executionArn=run.execution_arn)["events"])
            for run in every_run
        ],
        "raw bucket": [str(harness.raw_output(run)) for run in runs],
        "logs": _logs(harness, "*.log"),
    }
    for place, texts in written.items():
        for secret in (password, api_key):
            assert not any(secret in text for text in texts), f"a secret value is in the {place}"


def _logs(harness: Harness, pattern: str) -> list[str]:
    logs: Path = harness.stack.options.state_dir / "logs"
    return [path.read_text(errors="replace") for path in sorted(logs.glob(pattern))]


def _drops_without_a_bucket(harness: Harness, name: str) -> dict[str, Any]:
    return {"bucket": f"no-such-bucket-{name}", "format": "csv"}


def _drops_in_xml(harness: Harness, name: str) -> dict[str, Any]:
    return harness.partner.drops_connection(f"{name}/", "xml")


def _table_missing(harness: Harness, name: str) -> dict[str, Any]:
    return harness.partner_table_connection("no_such_table", name)


def _password_secret_missing(harness: Harness, name: str) -> dict[str, Any]:
    connection = PartnerTable(harness, name).connection()
    missing = harness.partner.secrets.secret_for(harness.source_id_of(name), "no-such-secret")
    return {**connection, "password_secret": missing}


def _database_unreachable(harness: Harness, name: str) -> dict[str, Any]:
    with socket.socket() as sock:  # a port nothing listens on: bound, then closed
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    dsn = f"host=127.0.0.1 port={dead_port} dbname=partner user=partner_reader"
    return {**harness.partner_table_connection("listings", name), "dsn": dsn}


def _api_key_secret_missing(harness: Harness, name: str) -> dict[str, Any]:
    return {
        "base_url": harness.vendor.url,
        "dataset": name,
        "api_key_secret": harness.partner.secrets.secret_for(
            harness.source_id_of(name), "no-such-key"
        ),
    }


MISCONFIGURED = [
    ("s3_files", _drops_without_a_bucket, "InvalidConnection", "connection.bucket"),
    ("s3_files", _drops_in_xml, "InvalidConnection", "connection.format"),
    ("postgres", _table_missing, "InvalidConnection", "no table or view"),
    ("postgres", _password_secret_missing, "SecretNotFound", "no-such-secret"),
    ("postgres", _database_unreachable, "SourceUnreachable", "gave up after 4 deliveries"),
    ("http_api", _api_key_secret_missing, "SecretNotFound", "connection.api_key_secret"),
]


@pytest.mark.parametrize(
    ("source_type", "misconfigure", "error", "detail"),
    MISCONFIGURED,
    ids=[case[1].__name__.strip("_") for case in MISCONFIGURED],
)
def test_a_misconfigured_source_fails_in_validation_before_anything_is_locked(
    harness: Harness, source_type: str, misconfigure: Any, error: str, detail: str
) -> None:
    # Given a source whose connection cannot work
    name = harness.unique_name()
    cursor = whole_seconds() - DAY
    source_id = harness.new_source(
        name,
        source_type=source_type,
        connection=misconfigure(harness, name),
        cursor=cursor,
        runtime_count=3,
    )

    # When it runs
    result = harness.run(source_id)

    # Then validation fails it by name, saying what is wrong; nothing was counted or locked
    assert (result.status, result.error) == ("FAILED", error), result
    assert (result.run["failed_step"], result.run["status"]) == ("Validate", "failed")
    assert detail in result.run["error_detail"]
    assert f"source {source_id!r}" in result.run["error_detail"]
    assert result.source is not None
    assert (result.source["runtime_count"], result.source["locked_by"]) == (3, None)
    assert result.source["last_modified_date"] == cursor

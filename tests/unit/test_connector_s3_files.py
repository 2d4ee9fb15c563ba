"""The s3_files connector: which objects a window reads, which rows it keeps, and what it
reports instead of dropping."""

from __future__ import annotations

import json
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from shared.connectors.base import (
    InvalidConnection,
    InvalidCredentials,
    SourceUnreachable,
    parse_connection,
)
from shared.connectors.s3_files import (
    OBJECT_CLOCK_SLACK,
    MalformedRow,
    S3FilesConnector,
    may_hold_window,
    record_time,
    row_in_window,
)
from shared.errors import PermanentError
from shared.rules.flows import Window, WindowField
from tests.fakes import FakeS3, client_error, landed

BUCKET = "partner-drops"
START = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
END = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NORMAL = Window(WindowField.LAST_MODIFIED, START, END, False)
SOLD_2026 = Window(WindowField.SOLD_DATE, datetime(2026, 1, 1, tzinfo=UTC), END, True)
DAY = timedelta(days=1)


def a_connector(s3: FakeS3, **changes: Any) -> S3FilesConnector:
    connection = parse_connection(
        "partner-drops", "s3_files", {"bucket": BUCKET, "format": "jsonl", **changes}
    )
    return S3FilesConnector.from_connection("partner-drops", connection, s3=s3)


def jsonl(*rows: dict[str, Any]) -> list[str]:
    return [json.dumps(row) + "\n" for row in rows]


def row(index: int, modified: datetime, **fields: Any) -> dict[str, Any]:
    return {"id": f"L{index}", "last_modified": modified.isoformat(), **fields}


# --- which objects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "may_hold"),
    [
        (START - OBJECT_CLOCK_SLACK - timedelta(seconds=1), False),
        (START - OBJECT_CLOCK_SLACK, True),  # the writer's clock may run ahead of S3's
        (START, True),
        (END + DAY, True),  # rewritten after the window closed: may still hold its records
    ],
)
def test_only_objects_written_before_a_last_modified_window_are_skipped(
    written: datetime, may_hold: bool
) -> None:
    assert may_hold_window(written, NORMAL) is may_hold


def test_a_sold_window_reads_every_object() -> None:
    assert may_hold_window(datetime(1999, 1, 1, tzinfo=UTC), SOLD_2026)


def test_a_normal_run_lists_every_page_but_reads_only_objects_that_may_hold_the_window() -> None:
    # Given five drops over three listing pages, two written long before the window opened
    s3 = FakeS3(END)
    old = START - 10 * DAY
    s3.put("a-old.jsonl", jsonl(row(1, old)), modified=old)
    s3.put("b-old.jsonl", jsonl(row(2, old)), modified=old)
    s3.put("c.jsonl", jsonl(row(3, START + DAY), row(4, START - DAY)))
    s3.put("d/", [])  # a console folder
    s3.put("e.jsonl", jsonl(row(5, END), row(6, END + timedelta(seconds=1))))
    # When a Normal window is read
    records = list(landed(a_connector(s3).records(NORMAL)))
    # Then the old objects were never opened, and rows were kept by their own dates, in order,
    # past the window's end too (download counts what is stamped in the future)
    assert s3.pages_listed == 3
    assert s3.read == ["c.jsonl", "e.jsonl"]
    assert [r["id"] for r in records] == ["L3", "L5", "L6"]


def test_a_sold_run_reads_every_object_and_filters_on_the_sold_date() -> None:
    s3 = FakeS3(END)
    old = datetime(2020, 5, 1, tzinfo=UTC)
    s3.put(
        "2020.jsonl",
        jsonl(
            row(1, old, sold_date="2025-12-31T23:59:59Z"),
            row(2, old, sold_date="2026-01-01"),  # a date: midnight UTC, inside [1 Jan, …]
            row(3, old, sold_date=None),  # unsold
            row(4, old, sold_date=""),  # unsold too
        ),
        modified=old,
    )
    connector = a_connector(s3)
    assert [r["id"] for r in landed(connector.records(SOLD_2026))] == ["L2"]
    assert connector.malformed.count == 0


def test_the_field_names_come_from_the_connection() -> None:
    s3 = FakeS3(END)
    s3.put("x.jsonl", jsonl({"id": "L1", "modified_at": (START + DAY).isoformat()}))
    connector = a_connector(s3, last_modified_field="modified_at")
    records = list(landed(connector.records(NORMAL)))
    assert records == [{"id": "L1", "modified_at": (START + DAY).isoformat()}]
    assert connector.last_modified(records[0]) == START + DAY


def test_a_prefix_limits_the_listing() -> None:
    s3 = FakeS3(END)
    s3.put("acme/1.jsonl", jsonl(row(1, START + DAY)))
    s3.put("other/2.jsonl", jsonl(row(2, START + DAY)))
    assert [r["id"] for r in landed(a_connector(s3, prefix="acme/").records(NORMAL))] == ["L1"]


# --- rows ---------------------------------------------------------------------------------------


def test_malformed_json_lines_are_counted_with_where_and_why() -> None:
    # Given a drop with good rows among lines that cannot be loaded
    s3 = FakeS3(END)
    good = START + DAY
    s3.objects["d.jsonl"] = (
        b"".join(
            [
                json.dumps(row(1, good)).encode() + b"\n",
                b"{not json\n",
                b"[1, 2]\n",
                b"\n",  # blank: not a row at all
                json.dumps({"id": "L5"}).encode() + b"\n",
                json.dumps(row(6, good)).encode()[:-1] + b', "note": "\xff"}\n',
                json.dumps({"id": "L7", "last_modified": "yesterday"}).encode() + b"\n",
                json.dumps({"id": "L8", "last_modified": "2026-11-21T10:00:00"}).encode(),
            ]
        ),
        END,
    )
    connector = a_connector(s3)
    # When the window is read
    records = list(landed(connector.records(NORMAL)))
    # Then the good row is loaded and each bad one is reported by line, none silently
    assert [r["id"] for r in records] == ["L1"]
    assert connector.malformed.count == 6
    where = f"s3://{BUCKET}/d.jsonl"
    assert connector.malformed.examples == [
        f"{where} line 2: is not JSON (unexpected character, expected a string key: line 1 "
        "column 2 (char 1))",
        f"{where} line 3: is not a JSON object",
        f"{where} line 5: has no last_modified",
        f"{where} line 6: is not UTF-8",
        f"{where} line 7: last_modified = 'yesterday' is not an ISO-8601 date, or date-time "
        "with a zone",
        f"{where} line 8: last_modified = '2026-11-21T10:00:00' is not an ISO-8601 date, or "
        "date-time with a zone",
    ]


def test_csv_rows_keep_their_header_names_and_report_ragged_rows() -> None:
    # Given a spreadsheet export: a byte-order mark, CRLF endings, a quoted field over two lines
    s3 = FakeS3(END)
    modified = (START + DAY).isoformat()
    s3.objects["d.csv"] = (
        "\ufeffid,modified_at,sold_on,note\r\n"
        f'L1,{modified},,"two\r\nlines"\r\n'
        f"L2,{modified},,extra,field\r\n"
        f"L3,{modified}\r\n"
        f"L4,{modified},2026-03-01,\r\n".encode(),
        END,
    )
    connector = a_connector(
        s3, format="csv", last_modified_field="modified_at", sold_date_field="sold_on"
    )
    records = list(connector.records(NORMAL))
    assert records == [
        {"id": "L1", "modified_at": modified, "sold_on": "", "note": "two\r\nlines"},
        {"id": "L4", "modified_at": modified, "sold_on": "2026-03-01", "note": ""},
    ]
    assert connector.malformed.examples == [
        f"s3://{BUCKET}/d.csv line 4: has more fields than the header",
        f"s3://{BUCKET}/d.csv line 5: has fewer fields than the header",
    ]


def test_each_read_counts_its_own_malformed_rows() -> None:
    s3 = FakeS3(END)
    s3.put("d.jsonl", ["{oops\n"])
    connector = a_connector(s3)
    list(connector.records(NORMAL))
    list(connector.records(NORMAL))
    assert connector.malformed.count == 1


@pytest.mark.parametrize(
    ("value", "moment"),
    [
        ("2026-11-21T10:00:00Z", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21T12:00:00+02:00", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21", datetime(2026, 11, 21, tzinfo=UTC)),
    ],
)
def test_a_record_date_is_a_zoned_date_time_or_a_date(value: str, moment: datetime) -> None:
    assert record_time({"d": value}, "d") == moment


@pytest.mark.parametrize("value", ["2026-11-21 10:00", "21/11/2026", 20261121, "2026-13-01"])
def test_a_record_date_that_does_not_parse_is_malformed(value: Any) -> None:
    with pytest.raises(MalformedRow):
        record_time({"d": value}, "d")


def test_a_row_without_a_sold_date_is_unsold_but_without_a_last_modified_is_malformed() -> None:
    assert row_in_window({"id": "L1"}, "sold_date", SOLD_2026) is False
    with pytest.raises(MalformedRow, match="has no last_modified"):
        row_in_window({"id": "L1"}, "last_modified", NORMAL)


# --- check and errors ---------------------------------------------------------------------------


def test_a_backfill_slice_places_rows_in_start_to_end_excluded() -> None:
    backfill = Window(WindowField.LAST_MODIFIED, START, END, True, end_exclusive=True)
    placed = {
        moment: row_in_window(row(1, moment), "last_modified", backfill)
        for moment in (START - timedelta(microseconds=1), START, END - DAY, END, END + DAY)
    }
    assert placed == {
        START - timedelta(microseconds=1): False,
        START: True,
        END - DAY: True,
        END: False,
        END + DAY: False,  # a range of the past is not read past its end
    }


@pytest.mark.parametrize("key_field", [None, "id", "listing_id"])
def test_check_lists_at_most_one_key_and_reads_nothing(key_field: str | None) -> None:
    # Validation may only list (its role has no s3:GetObject): a key_field its records lack is
    # found by download's first object (tests/integration/test_record_versions.py).
    s3 = FakeS3(END)
    s3.put("d.jsonl", jsonl(row(1, START)))
    a_connector(s3, **({"key_field": key_field} if key_field else {})).check()
    assert s3.read == []


@pytest.mark.parametrize(
    ("failure", "error", "says"),
    [
        (client_error("NoSuchBucket", "ListObjectsV2"), InvalidConnection, "fix connection.bucket"),
        (client_error("AccessDenied", "ListObjectsV2"), InvalidCredentials, "grant s3:ListBucket"),
        (client_error("SlowDown", "ListObjectsV2"), SourceUnreachable, "SlowDown"),
        (EndpointConnectionError(endpoint_url="https://s3"), SourceUnreachable, "cannot list"),
    ],
)
def test_s3_errors_become_named_errors_that_say_what_to_fix(
    failure: Exception, error: type[Exception], says: str
) -> None:
    connector = a_connector(FakeS3(END, failure=failure))
    with pytest.raises(error, match=says):
        connector.check()
    with pytest.raises(error, match=says):
        list(connector.records(NORMAL))


def test_a_drop_deleted_after_the_listing_is_passed_over() -> None:
    s3 = FakeS3(END)
    s3.put("gone.jsonl", jsonl(row(1, START + DAY)))
    s3.put("kept.jsonl", jsonl(row(2, START + DAY)))
    s3.deleted.add("gone.jsonl")
    assert [r["id"] for r in landed(a_connector(s3).records(NORMAL))] == ["L2"]


# --- hostile drops (docs/limits.md) -------------------------------------------------------------


def test_a_line_nested_100k_deep_is_one_malformed_row_and_the_drop_loads() -> None:
    # Given a drop whose second line is nested 100,000 levels deep
    s3 = FakeS3(END)
    deep = "[" * 100_000 + "]" * 100_000 + "\n"
    s3.put("d.jsonl", [*jsonl(row(1, START + DAY)), deep, *jsonl(row(3, START + DAY))])
    connector = a_connector(s3)
    # When the window is read, then that line is counted and the others load, on every run
    for _ in range(2):
        assert [r["id"] for r in landed(connector.records(NORMAL))] == ["L1", "L3"]
        [example] = connector.malformed.examples
        assert example.startswith(f"s3://{BUCKET}/d.jsonl line 2: is not JSON (depth limit")


def test_a_byte_that_is_not_utf8_inside_a_quoted_csv_field_spoils_only_its_row() -> None:
    # Given a CSV drop whose second row has a byte that is not UTF-8 in a field spanning lines
    s3 = FakeS3(END)
    modified = (START + DAY).isoformat()
    s3.objects["d.csv"] = (
        b"id,modified_at,note\n"
        + f'L1,{modified},"fine"\n'.encode()
        + f'L2,{modified},"caf'.encode()
        + b'\xe9\n"\n'  # Latin-1, and the field's closing quote on a line of its own
        + f"L3,{modified},plain\n".encode()
        + f'L4,{modified},"two\nlines, ""quoted"""\n'.encode()
        + f"L5,{modified},plain\n".encode(),
        END,
    )
    connector = a_connector(s3, format="csv", last_modified_field="modified_at")
    # When the window is read, then only that row is malformed and the rest of the drop loads
    records = list(landed(connector.records(NORMAL)))
    assert [r["id"] for r in records] == ["L1", "L3", "L4", "L5"]
    assert records[2]["note"] == 'two\nlines, "quoted"'
    assert connector.malformed.examples == [f"s3://{BUCKET}/d.csv line 4: is not UTF-8"]


def test_a_line_over_the_limit_is_skipped_without_being_held() -> None:
    # Given a drop with a 5 MB line between two rows, and a line limit of 64 KiB
    s3 = FakeS3(END)
    huge = '{"id": "L2", "note": "' + "x" * 5_000_000 + '"}\n'
    s3.put("d.jsonl", [*jsonl(row(1, START + DAY)), huge, *jsonl(row(3, START + DAY))])
    connector = a_connector(s3, limits={"max_page_bytes": 65_536})
    tracemalloc.start()
    try:
        records = [r["id"] for r in landed(connector.records(NORMAL))]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert records == ["L1", "L3"]
    assert connector.malformed.examples == [
        f"s3://{BUCKET}/d.jsonl line 2: is a line over 65,536 bytes (the source's "
        "connection.limits.max_page_bytes)"
    ]
    assert peak < 1_000_000, f"{peak:,} bytes allocated"


def test_a_csv_line_over_the_limit_spoils_its_own_row_only() -> None:
    s3 = FakeS3(END)
    modified = (START + DAY).isoformat()
    s3.objects["d.csv"] = (
        f"id,modified_at\nL1,{modified}\nL2,{'x' * 70_000}\nL3,{modified}\n".encode(),
        END,
    )
    connector = a_connector(
        s3, format="csv", last_modified_field="modified_at", limits={"max_page_bytes": 65_536}
    )
    assert [r["id"] for r in landed(connector.records(NORMAL))] == ["L1", "L3"]
    assert [e.split(": ")[0] for e in connector.malformed.examples] == [
        f"s3://{BUCKET}/d.csv line 3"
    ]


@pytest.mark.parametrize(
    ("limits", "error_name"),
    [({"max_records": 3}, "TooManyRecords"), ({"max_bytes": 2048}, "TooManyBytes")],
)
def test_a_drop_past_the_run_limits_stops_the_run_by_name(
    limits: dict[str, int], error_name: str
) -> None:
    s3 = FakeS3(END)
    s3.put("d.jsonl", jsonl(*(row(i, START + DAY, note="x" * 300) for i in range(10))))
    with pytest.raises(PermanentError) as caught:
        list(a_connector(s3, limits=limits).records(NORMAL))
    assert caught.value.error_name == error_name


def test_a_record_date_out_of_range_in_utc_is_malformed() -> None:
    with pytest.raises(MalformedRow, match="is not an ISO-8601 date"):
        record_time({"d": "9999-12-31T23:59:59-05:00"}, "d")


# --- resuming a download (a continued or redelivered invocation) ---------------------------------


def read_all(connector: S3FilesConnector) -> list[tuple[str, dict[str, Any] | None]]:
    """Each record's id, and the position the connector gives right after it."""
    return [(record["id"], connector.position) for record in landed(connector.records(NORMAL))]


def resumed_ids(connector: S3FilesConnector, position: dict[str, Any]) -> list[str]:
    return [record["id"] for record in landed(connector.records(NORMAL, position))]


def test_a_download_resumes_after_any_row_with_the_rest_of_its_object_then_the_next() -> None:
    # Given two drops, the first with a blank line and a malformed row in it
    s3 = FakeS3(END)
    modified = START + DAY
    s3.put("a.jsonl", [*jsonl(row(1, modified)), "\n", "{oops\n", *jsonl(row(2, modified))])
    s3.put("b.jsonl", jsonl(row(3, modified), row(4, modified)))
    connector = a_connector(s3)
    read = read_all(connector)
    assert [record_id for record_id, _ in read] == ["L1", "L2", "L3", "L4"]
    # When a later read resumes after each record in turn
    for index, (_, position) in enumerate(read):
        assert position is not None
        # Then it reads exactly the records after it, the object's rest by a ranged read
        assert resumed_ids(a_connector(s3), position) == [r for r, _ in read[index + 1 :]]
    first = read[0][1]
    assert first is not None
    assert (first["key"], first["etag"], first["line"]) == ("a.jsonl", s3.etag("a.jsonl"), 1)
    assert first["offset"] == len(jsonl(row(1, modified))[0])
    # And its where-labels and its limits go on from where the earlier read was
    resumed = a_connector(s3)
    resumed_ids(resumed, first)
    assert resumed.malformed.examples[0].startswith(f"s3://{BUCKET}/a.jsonl line 3: is not JSON")


def test_a_resumed_csv_object_keeps_its_header() -> None:
    s3 = FakeS3(END)
    modified = (START + DAY).isoformat()
    s3.objects["d.csv"] = (
        f'id,last_modified,note\r\nL1,{modified},"two\r\nlines"\r\nL2,{modified},x\r\n'.encode(),
        END,
    )
    connector = a_connector(s3, format="csv")
    [(_, position), (_, last)] = read_all(connector)
    assert position is not None and position["fieldnames"] == ["id", "last_modified", "note"]
    assert position["line"] == 3  # the quoted field spans lines 2 and 3
    assert list(a_connector(s3, format="csv").records(NORMAL, position)) == [
        {"id": "L2", "last_modified": modified, "note": "x"}
    ]
    # Resumed after the object's last row, nothing of it is left to read
    assert last is not None and resumed_ids(a_connector(s3, format="csv"), last) == []


def test_an_object_rewritten_since_the_earlier_read_is_read_again_from_its_start() -> None:
    s3 = FakeS3(END)
    modified = START + DAY
    s3.put("a.jsonl", jsonl(row(1, modified), row(2, modified)))
    [(_, position), _] = read_all(a_connector(s3))
    s3.put("a.jsonl", jsonl(row(5, modified), row(6, modified), row(7, modified)))
    assert position is not None
    assert resumed_ids(a_connector(s3), position) == ["L5", "L6", "L7"]


def test_a_long_stretch_of_rows_left_out_checks_in_where_a_download_may_resume() -> None:
    # Given a drop of 2,500 rows older than the window, then one inside it
    s3 = FakeS3(END)
    old, new = START - DAY, START + DAY
    s3.put("a.jsonl", [*jsonl(*(row(i, old) for i in range(2_500))), *jsonl(row(9, new))])
    connector = a_connector(s3)
    # When it is read, Then it checks in after every thousand rows left out, each time with
    # the place a download may resume from, and the row in the window follows
    read = [(record, connector.position) for record in connector.records(NORMAL)]
    assert [record and record["id"] for record, _ in read] == [None, None, "L9"]
    check_in = read[1][1]
    assert check_in is not None and check_in["line"] == 2_000
    assert [r["id"] for r in landed(a_connector(s3).records(NORMAL, check_in))] == ["L9"]

"""local.vendor: deterministic listings, filters, keyset paging, upserts, errors, faults,
hostile pages."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from local.vendor.hostile import BAD_DATE
from local.vendor.records import (
    EPOCH_START,
    floor_seconds,
    format_timestamp,
    generate_record,
    parse_timestamp,
    record_times,
)
from local.vendor.server import VendorHandler, VendorState
from shared.connectors.http_api import NEXT_PAGE_TOKEN_HEADER
from tests.fakes import serve_in_memory

ANCHOR = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
ANCHOR_S = floor_seconds(ANCHOR)
LATER = ANCHOR + timedelta(hours=3)  # the server's clock: upserts land after the anchor


class Vendor:
    """The vendor's state and a tiny JSON client for it, speaking HTTP to the vendor's request
    handler in memory (unit tests open no sockets)."""

    def __init__(self, state: VendorState) -> None:
        self.server = HandlerServer(state)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = self.answer(method, path, body)
        return response.status, json.loads(response.read())

    def answer(self, method: str, path: str, body: Any = None) -> http.client.HTTPResponse:
        """The handler's answer as a client reads it, its body not yet read."""
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: vendor\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        answer = serve_in_memory(VendorHandler, self.server, head.encode() + data)
        response = http.client.HTTPResponse(AnswerSocket(answer))  # type: ignore[arg-type]
        response.begin()
        return response

    def get(self, path: str, **params: Any) -> tuple[int, Any]:
        query = f"?{urlencode(params)}" if params else ""
        return self.call("GET", f"{path}{query}")

    def ok(self, path: str, **params: Any) -> Any:
        status, body = self.get(path, **params)
        assert status == 200, body
        return body

    def all_records(self, dataset: str, **params: Any) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        while True:
            page = self.ok(f"/datasets/{quote(dataset)}/records", **params)
            records.extend(page["records"])
            if page["next_page_token"] is None:
                return records
            params["page_token"] = page["next_page_token"]

    def count(self, dataset: str, **params: Any) -> int:
        return int(self.ok(f"/datasets/{quote(dataset)}/count", **params)["count"])

    def upsert(self, dataset: str, *records: dict[str, Any]) -> dict[str, Any]:
        status, body = self.call(
            "POST", f"/datasets/{quote(dataset)}/records", {"records": records}
        )
        assert status == 200, body
        return dict(body)


@dataclass
class HandlerServer:
    """What the vendor's request handler reads of its server."""

    state: VendorState


@dataclass
class AnswerSocket:
    """The bytes a handler answered, as http.client reads a response from a socket."""

    answer: bytes

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.answer)


@pytest.fixture
def vendor() -> Vendor:
    """Fresh datasets and no faults per test, so upserts and faults never leak between tests."""
    state = VendorState(anchor=ANCHOR, clock=lambda: LATER)
    for name, size in {"small": 300, "other": 50, "empty": 0}.items():
        state.add(name, size)
    return Vendor(state)


def order_key(record: dict[str, Any]) -> tuple[str, str]:
    return record["last_modified"], record["id"]


def seconds(text: str) -> int:
    return floor_seconds(parse_timestamp(text))


# --- generation --------------------------------------------------------------------------------


def test_given_same_name_index_anchor_when_generated_twice_then_records_are_equal() -> None:
    assert generate_record("listings-a", 42, ANCHOR) == generate_record("listings-a", 42, ANCHOR)
    assert generate_record("listings-a", 42, ANCHOR)["id"] == "listings-a-0000042"
    # Equal within one process cannot notice a change to how records are generated (say, a
    # hash or a time formula); the values below were rendered when this test was written
    record = generate_record("listings-a", 42, ANCHOR)
    assert (record["last_modified"], record["listed_date"], record["price"]) == (
        "2021-02-19T03:25:01Z",
        "2020-06-19T10:59:21Z",
        798000,
    )


def test_given_different_datasets_or_indices_when_generated_then_records_differ() -> None:
    a, b = generate_record("listings-a", 7, ANCHOR), generate_record("listings-b", 7, ANCHOR)
    assert a["last_modified"] != b["last_modified"]
    assert {k: v for k, v in a.items() if k != "id"} != {k: v for k, v in b.items() if k != "id"}
    assert generate_record("listings-a", 8, ANCHOR) != a


def test_given_a_later_anchor_when_generated_then_only_times_move() -> None:
    earlier = generate_record("listings-a", 3, ANCHOR)
    later = generate_record("listings-a", 3, ANCHOR + timedelta(days=30))
    assert later["last_modified"] > earlier["last_modified"]
    assert later["address"] == earlier["address"] and later["price"] == earlier["price"]


def test_last_modified_spans_1995_to_anchor_and_is_denser_recently() -> None:
    times = [record_times("listings-a", i, ANCHOR_S)[0] for i in range(5000)]
    assert all(floor_seconds(EPOCH_START) <= t <= ANCHOR_S for t in times)
    last_year = sum(t > ANCHOR_S - 365 * 86400 for t in times)
    y2000, y2005 = floor_seconds(datetime(2000, 1, 1, tzinfo=UTC)), 1104537600
    early = sum(y2000 <= t < y2005 for t in times)
    assert last_year > 3 * early
    assert sum(t > ANCHOR_S - 30 * 86400 for t in times) > 300  # ~14% within 30 days
    assert sum(t > ANCHOR_S - 86400 for t in times) > 50  # ~4% within the last day


def test_generated_records_are_consistent_and_realistically_sized() -> None:
    records = [generate_record("listings-a", i, ANCHOR) for i in range(2000)]
    sold = [r for r in records if r["sold_date"] is not None]
    assert 0.30 < len(sold) / len(records) < 0.40
    for r in records:
        assert (r["status"] == "sold") == (r["sold_date"] is not None)
        assert r["status"] in ("for_sale", "sold", "withdrawn")
        assert r["listed_date"] <= r["last_modified"] <= format_timestamp(ANCHOR_S)
        if r["sold_date"] is not None:
            assert r["listed_date"] <= r["sold_date"] <= r["last_modified"]
        assert format_timestamp(seconds(r["last_modified"])) == r["last_modified"]
    sizes = [len(json.dumps(r)) for r in records]
    assert 400 <= sum(sizes) / len(sizes) <= 700


# --- reading over HTTP ---------------------------------------------------------------------


def test_health_and_datasets(vendor: Vendor) -> None:
    assert vendor.ok("/health") == {"status": "ok"}
    listed = vendor.ok("/datasets")["datasets"]
    assert {"name": "small", "size": 300, "anchor": "2025-06-01T12:00:00Z"} in listed
    assert [d["name"] for d in listed] == ["small", "other", "empty"]


def test_given_small_pages_when_paging_then_every_record_comes_once_in_order(
    vendor: Vendor,
) -> None:
    records = vendor.all_records("small", page_size=37)
    ids = [r["id"] for r in records]
    assert sorted(ids) == [f"small-{i:07d}" for i in range(300)]
    assert [order_key(r) for r in records] == sorted(order_key(r) for r in records)
    assert records[5] == generate_record("small", int(records[5]["id"][-7:]), ANCHOR)
    assert vendor.count("small") == 300
    assert vendor.all_records("empty") == [] and vendor.count("empty") == 0


def test_given_filters_when_counting_then_count_equals_paged_records(vendor: Vendor) -> None:
    filters = [
        {"modified_after": "2024-01-01T00:00:00Z"},
        {"modified_after": "2010-01-01T00:00:00Z", "modified_until": "2024-06-01T00:00:00Z"},
        {"sold_from": "2020-01-01T00:00:00Z", "sold_until": "2025-01-01T00:00:00Z"},
        {"sold_from": "2015-01-01T00:00:00Z", "modified_until": "2024-01-01T00:00:00Z"},
    ]
    for params in filters:
        paged = vendor.all_records("small", page_size=11, **params)
        assert vendor.count("small", **params) == len(paged) > 0, params


def test_modified_after_is_exclusive_and_modified_until_inclusive(vendor: Vendor) -> None:
    records = vendor.all_records("small")
    target = records[150]
    at = target["last_modified"]
    after = vendor.all_records("small", modified_after=at)
    until = vendor.all_records("small", modified_until=at)
    assert target not in after and target in until
    assert len(after) + len(until) == 300
    assert all(r["last_modified"] > at for r in after)
    assert all(r["last_modified"] <= at for r in until)
    # Given a fractional or +00:00 bound just before the record, it is included
    half_second_before = format_timestamp(seconds(at) - 1).replace("Z", ".5+00:00")
    assert target in vendor.all_records("small", modified_after=half_second_before)
    assert target not in vendor.all_records("small", modified_until=half_second_before)


def test_sold_range_is_inclusive_and_excludes_unsold(vendor: Vendor) -> None:
    sold = sorted(
        (r for r in vendor.all_records("small") if r["sold_date"] is not None),
        key=lambda r: r["sold_date"],
    )
    target = sold[len(sold) // 2]
    at = target["sold_date"]
    exactly = vendor.all_records("small", sold_from=at, sold_until=at)
    assert target in exactly and all(r["sold_date"] == at for r in exactly)
    one_later = format_timestamp(seconds(at) + 1)
    assert target not in vendor.all_records("small", sold_from=one_later)
    everything_sold = vendor.all_records("small", sold_from="1990-01-01T00:00:00Z")
    assert len(everything_sold) == len(sold) < 300
    assert all(r["sold_date"] is not None for r in everything_sold)


# --- upserts -------------------------------------------------------------------------------


def test_given_existing_record_when_upserted_then_it_moves_to_now_and_merges(
    vendor: Vendor,
) -> None:
    old = vendor.all_records("small")[0]
    body = vendor.upsert("small", {"id": old["id"], "price": 123456})
    assert body["upserted"] == 1
    updated = body["records"][0]
    assert updated["last_modified"] == "2025-06-01T15:00:00Z" > old["last_modified"]
    assert updated["price"] == 123456 and updated["address"] == old["address"]
    # Then it is served once, in its new place, and counts do not change
    fresh = vendor.all_records("small", modified_after="2025-06-01T12:00:00Z")
    assert fresh == [updated]
    everything = vendor.all_records("small", page_size=50)
    assert [r["id"] for r in everything].count(old["id"]) == 1 and everything[-1] == updated
    assert vendor.count("small") == 300
    assert vendor.count("small", modified_until="2025-06-01T12:00:00Z") == 299


def test_given_new_id_when_upserted_then_inserted_with_defaults(vendor: Vendor) -> None:
    body = vendor.upsert("brand-new", {"id": "x-1", "city": "Leeds", "sold_date": None})
    record = body["records"][0]
    assert record["city"] == "Leeds" and record["status"] == "for_sale"
    assert record["last_modified"] == "2025-06-01T15:00:00Z" and record["price"] is None
    assert vendor.all_records("brand-new") == [record]
    assert {"name": "brand-new", "size": 0, "anchor": "2025-06-01T12:00:00Z"} in vendor.ok(
        "/datasets"
    )["datasets"]


def test_given_equal_timestamps_when_paging_one_by_one_then_ties_break_by_id(
    vendor: Vendor,
) -> None:
    base = vendor.all_records("other")[20]
    at = base["last_modified"]
    vendor.upsert("other", *({"id": f"other-tie-{n}", "last_modified": at} for n in (2, 0, 1)))
    window = vendor.all_records(
        "other", page_size=1, modified_after=format_timestamp(seconds(at) - 1)
    )
    same = [r["id"] for r in window if r["last_modified"] == at]
    assert same == sorted([base["id"], "other-tie-0", "other-tie-1", "other-tie-2"])
    assert vendor.count("other") == 53


def test_given_sold_date_when_upserted_then_status_follows(vendor: Vendor) -> None:
    record = vendor.upsert("small", {"id": "small-0000001", "sold_date": "2025-06-01T10:00:00Z"})
    assert record["records"][0]["status"] == "sold"
    status, body = vendor.call(
        "POST", "/datasets/small/records", {"records": [{"id": "a", "sold_date": "soon"}]}
    )
    assert status == 400 and "sold_date='soon'" in body["error"]


# --- errors and faults ---------------------------------------------------------------------


def test_unknown_dataset_is_404_listing_known_ones(vendor: Vendor) -> None:
    status, body = vendor.get("/datasets/nope/records")
    assert status == 404
    assert "'nope'" in body["error"] and "small" in body["error"] and "other" in body["error"]
    assert vendor.get("/datasets/nope/count")[0] == 404


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"modified_after": "yesterday"}, "modified_after='yesterday'"),
        ({"sold_until": "2024-13-01"}, "sold_until='2024-13-01'"),
        ({"page_size": "0"}, "page_size='0'"),
        ({"page_size": "10001"}, "from 1 to 10000"),
        ({"page_size": "ten"}, "page_size='ten'"),
        ({"page_token": "not-a-token"}, "page_token 'not-a-token'"),
        ({"since": "2024-01-01"}, "unknown query parameter 'since'"),
    ],
)
def test_bad_parameters_are_400_naming_parameter_and_value(
    vendor: Vendor, params: dict[str, str], expected: str
) -> None:
    status, body = vendor.get("/datasets/small/records", **params)
    assert status == 400
    assert expected in body["error"] and "expected" in body["error"]


def test_given_fault_after_k_records_then_pages_fail_until_cleared(vendor: Vendor) -> None:
    status, _ = vendor.call(
        "POST", "/admin/faults", {"dataset": "small", "fail_status": 500, "after_records": 10}
    )
    assert status == 200
    first = vendor.ok("/datasets/small/records", page_size=6)
    second = vendor.ok("/datasets/small/records", page_size=6, page_token=first["next_page_token"])
    status, body = vendor.get(
        "/datasets/small/records", page_size=6, page_token=second["next_page_token"]
    )
    assert status == 500 and "injected fault" in body["error"]
    assert vendor.get("/datasets/other/records", page_size=6)[0] == 200  # other datasets fine
    assert vendor.call("DELETE", "/admin/faults")[0] == 200
    assert vendor.get("/datasets/small/records", page_token=second["next_page_token"])[0] == 200


def test_given_fault_with_zero_records_and_delay_then_fails_immediately_after_delay(
    vendor: Vendor,
) -> None:
    vendor.call(
        "POST",
        "/admin/faults",
        {"dataset": "other", "fail_status": 503, "after_records": 0, "page_delay_ms": 50},
    )
    started = time.monotonic()
    assert vendor.get("/datasets/other/records")[0] == 503
    assert time.monotonic() - started >= 0.05
    status, body = vendor.call("POST", "/admin/faults", {"dataset": "other", "fail_status": 200})
    assert status == 400 and "fail_status=200" in body["error"]


def test_an_injected_failure_may_say_when_to_come_back(vendor: Vendor) -> None:
    body = {"dataset": "small", "fail_status": 429, "fail_times": 1, "retry_after_s": 25}
    assert vendor.call("POST", "/admin/faults", body)[0] == 200
    answer = vendor.answer("GET", "/datasets/small/records")
    assert (answer.status, answer.getheader("Retry-After")) == (429, "25")
    assert vendor.get("/datasets/small/records")[0] == 200  # once only
    fault = vendor.ok("/admin/faults")["faults"]["small"]
    assert (fault["retry_after_s"], fault["fail_status"], fault["served"]) == (25, None, 300)


# --- a concurrency limit (POST /admin/limits) --------------------------------------------------


def test_a_request_beyond_the_limit_is_refused_with_retry_after_and_counted(
    vendor: Vendor,
) -> None:
    # Given a limit of one request at a time on "small", with one request being served
    body = {"dataset": "small", "max_concurrent": 1, "retry_after_s": 3}
    assert vendor.call("POST", "/admin/limits", body)[0] == 200
    state = vendor.server.state
    with state.admitted("small"):
        # When another request comes meanwhile, Then it is refused with 429 and Retry-After
        answer = vendor.answer("GET", "/datasets/small/records")
        assert (answer.status, answer.getheader("Retry-After")) == (429, "3")
        assert "at most 1 at once" in json.loads(answer.read())["error"]
        # (another dataset is not limited)
        assert vendor.get("/datasets/other/records")[0] == 200
    # And once the first is done, the next is served
    assert vendor.get("/datasets/small/records", page_size=5)[0] == 200
    limits = vendor.ok("/admin/limits")["limits"]
    assert limits == {
        "small": {
            "max_concurrent": 1,
            "retry_after_s": 3,
            "in_flight": 0,
            "max_seen": 2,  # the refused request counts: what a client let happen
            "refused": 1,
            "pages": 2,
        }
    }


def test_limits_are_lifted_all_at_once(vendor: Vendor) -> None:
    vendor.call("POST", "/admin/limits", {"dataset": "small", "max_concurrent": 2})
    assert vendor.call("DELETE", "/admin/limits") == (200, {"limits": {}})
    assert vendor.server.state.limits == {}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"dataset": "small"}, "max_concurrent"),
        ({"dataset": "small", "max_concurrent": 0}, "max_concurrent=0"),
        ({"dataset": "small", "max_concurrent": 2, "retry_after_s": -1}, "retry_after_s=-1"),
        ({"max_concurrent": 2}, "dataset"),
    ],
)
def test_a_bad_limit_is_400_naming_the_field(
    vendor: Vendor, body: dict[str, Any], expected: str
) -> None:
    status, answer = vendor.call("POST", "/admin/limits", body)
    assert status == 400 and expected in answer["error"]


# --- hostile pages (local.vendor.hostile) -----------------------------------------------------


def hostile(vendor: Vendor, dataset: str, mode: str, **settings: Any) -> None:
    body = {"dataset": dataset, "page_mode": mode, **settings}
    status, answer = vendor.call("POST", "/admin/faults", body)
    assert status == 200, answer


def test_a_gzip_bomb_is_a_small_page_on_the_wire_that_inflates_to_the_size_asked(
    vendor: Vendor,
) -> None:
    hostile(vendor, "small", "gzip_bomb", inflated_bytes=5_000_000)
    response = vendor.answer("GET", "/datasets/small/records")
    wire = response.read()
    assert response.getheader("Content-Encoding") == "gzip"
    assert len(wire) < 10_000
    page = gzip.decompress(wire)
    assert len(page) == 5_000_000
    assert json.loads(page) == {"records": [], "next_page_token": None}


def test_a_repeated_token_serves_the_first_page_and_its_token_again(vendor: Vendor) -> None:
    hostile(vendor, "small", "repeated_token")
    first = vendor.ok("/datasets/small/records", page_size=10)
    again = vendor.ok("/datasets/small/records", page_size=10, page_token=first["next_page_token"])
    assert again == first and first["next_page_token"] is not None


@pytest.mark.parametrize(
    ("mode", "content_type", "starts"),
    [("not_json", "text/html", b"<html>"), ("json_array", "application/json", b"[{")],
)
def test_a_page_that_is_not_a_records_object(
    vendor: Vendor, mode: str, content_type: str, starts: bytes
) -> None:
    hostile(vendor, "small", mode)
    response = vendor.answer("GET", "/datasets/small/records?page_size=3")
    assert (response.status, response.getheader("Content-Type")) == (200, content_type)
    assert response.read().startswith(starts)


def test_bad_dates_replace_every_last_modified(vendor: Vendor) -> None:
    hostile(vendor, "small", "bad_dates")
    page = vendor.ok("/datasets/small/records", page_size=3)
    assert {record["last_modified"] for record in page["records"]} == {BAD_DATE}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"page_mode": "zip_bomb"}, "page_mode='zip_bomb'"),
        ({"page_mode": "gzip_bomb", "inflated_bytes": 0}, "inflated_bytes=0"),
    ],
)
def test_a_hostile_mode_the_vendor_does_not_have_is_400(
    vendor: Vendor, settings: dict[str, Any], expected: str
) -> None:
    status, body = vendor.call("POST", "/admin/faults", {"dataset": "small", **settings})
    assert status == 400 and expected in body["error"]


# --- time: late visibility, a dataset's clock, far-future stamps ---------------------------


class Clock:
    """The server's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(vendor: Vendor, monkeypatch: pytest.MonkeyPatch) -> Clock:
    the_clock = Clock(LATER)
    monkeypatch.setattr(vendor.server.state, "clock", the_clock)
    return the_clock


def visible_upsert(
    vendor: Vendor, dataset: str, visible_after_s: int, *records: dict[str, Any]
) -> list[dict[str, Any]]:
    status, body = vendor.call(
        "POST",
        f"/datasets/{dataset}/records",
        {"records": records, "visible_after_s": visible_after_s},
    )
    assert status == 200, body
    return list(body["records"])


def test_given_visible_after_s_then_records_are_served_that_long_after_their_stamp(
    vendor: Vendor, clock: Clock
) -> None:
    # Given a record upserted at 15:00:00.7, stamped 15:00:00, visible 5 s after its stamp
    clock.now = LATER + timedelta(seconds=0.7)
    [late] = visible_upsert(vendor, "small", 5, {"id": "late-1", "price": 1})
    assert late["last_modified"] == "2025-06-01T15:00:00Z"
    recent = {"modified_after": "2025-06-01T12:00:00Z"}

    # Then pages and counts leave it out until 15:00:05, and serve it from then on
    clock.now = LATER + timedelta(seconds=4.9)
    assert vendor.all_records("small", **recent) == [] and vendor.count("small") == 300
    clock.now = LATER + timedelta(seconds=5)
    assert vendor.all_records("small", **recent) == [late] and vendor.count("small") == 301


def test_given_a_late_update_then_the_previous_version_is_served_until_it_is_visible(
    vendor: Vendor, clock: Clock
) -> None:
    old = vendor.all_records("small")[0]
    [new] = visible_upsert(vendor, "small", 2, {"id": old["id"], "price": 7})
    assert vendor.all_records("small")[0] == old
    clock.now = LATER + timedelta(seconds=2)
    everything = vendor.all_records("small")
    assert old not in everything and everything[-1] == new and len(everything) == 300


def test_given_a_stamp_long_past_and_visible_after_s_then_it_is_visible_at_once(
    vendor: Vendor, clock: Clock
) -> None:
    # Given a record its writer stamped 10 s ago, visible 5 s after that stamp
    stamp = format_timestamp(floor_seconds(LATER) - 10)
    [record] = visible_upsert(vendor, "empty", 5, {"id": "e-1", "last_modified": stamp})
    # Then it is already served
    assert vendor.all_records("empty") == [record]


@pytest.mark.parametrize("offset_s", [-30, 30])
def test_given_a_clock_offset_then_the_dataset_stamps_by_its_own_clock(
    vendor: Vendor, clock: Clock, offset_s: int
) -> None:
    status, body = vendor.call("POST", "/admin/clock", {"dataset": "empty", "offset_s": offset_s})
    expected = format_timestamp(floor_seconds(LATER) + offset_s)
    assert status == 200 and body == {"dataset": "empty", "offset_s": offset_s, "now": expected}
    # Then the vendor stamps the dataset's upserts by its clock, and only that dataset's
    assert vendor.upsert("empty", {"id": "e-1"})["records"][0]["last_modified"] == expected
    other = vendor.upsert("other", {"id": "o-1"})["records"][0]
    assert other["last_modified"] == "2025-06-01T15:00:00Z"
    # And a late record is visible N seconds after its stamp by that same clock
    [late] = visible_upsert(vendor, "empty", 3, {"id": "e-2"})
    assert late["last_modified"] == expected
    clock.now = LATER + timedelta(seconds=2.5)
    assert [r["id"] for r in vendor.all_records("empty")] == ["e-1"]
    clock.now = LATER + timedelta(seconds=3)
    assert [r["id"] for r in vendor.all_records("empty")] == ["e-1", "e-2"]


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"),
    [
        ("/admin/clock", {"dataset": "nope", "offset_s": 1}, 404, "'nope'"),
        ("/admin/clock", {"dataset": "small", "offset_s": 1.5}, 400, "offset_s=1.5"),
        ("/admin/clock", {"dataset": "small", "offset_s": 10**9}, 400, "offset_s=1000000000"),
        ("/admin/clock", {"offset_s": 1}, 400, '"dataset": name'),
        ("/datasets/small/records", {"records": [], "visible_after_s": -1}, 400, "-1"),
        ("/datasets/small/records", {"records": [], "visible_after_s": "5"}, 400, "'5'"),
    ],
)
def test_bad_time_settings_are_4xx_naming_the_field(
    vendor: Vendor, path: str, body: dict[str, Any], status: int, expected: str
) -> None:
    answered, answer = vendor.call("POST", path, body)
    assert answered == status and expected in answer["error"], answer


def test_a_record_stamped_9999_12_31_is_accepted_and_served_last(vendor: Vendor) -> None:
    last_second = "9999-12-31T23:59:59Z"
    [record] = vendor.upsert("small", {"id": "far-1", "last_modified": last_second})["records"]
    assert record["last_modified"] == last_second
    assert vendor.all_records("small", page_size=299)[-1] == record
    assert vendor.all_records("small", modified_after="9999-12-31T23:59:58Z") == [record]
    assert vendor.count("small", modified_after="2025-06-01T12:00:00Z") == 1
    # A stamp past the last representable instant is a 400, not an internal error
    status, body = vendor.call(
        "POST",
        "/datasets/small/records",
        {"records": [{"id": "far-2", "last_modified": "9999-12-31T23:59:59-01:00"}]},
    )
    assert status == 400 and "last_modified='9999-12-31T23:59:59-01:00'" in body["error"]


def test_json_lines_pages_hold_the_same_records_and_pass_the_token_in_a_header(
    vendor: Vendor,
) -> None:
    # Given the dataset paged as JSON objects
    expected = vendor.all_records("small", page_size=37)
    # When it is paged as JSON lines, following the Next-Page-Token header
    records: list[dict[str, Any]] = []
    params: dict[str, Any] = {"page_size": 37, "format": "jsonl"}
    while True:
        answer = vendor.answer("GET", f"/datasets/small/records?{urlencode(params)}")
        assert (answer.status, answer.getheader("Content-Type")) == (200, "application/x-ndjson")
        body = answer.read()
        assert body.endswith(b"\n") and b"\n\n" not in body
        records.extend(json.loads(line) for line in body.splitlines())
        if not (token := answer.getheader(NEXT_PAGE_TOKEN_HEADER)):
            break
        params["page_token"] = token
    # Then the same records come, in the same order, one per line
    assert records == expected


def test_an_unknown_format_is_refused_naming_the_known_ones(vendor: Vendor) -> None:
    status, body = vendor.get("/datasets/small/records", format="ndjson")
    assert status == 400
    assert body["error"] == "format='ndjson' is not valid; expected one of ('json', 'jsonl')"

"""The http_api connector: its connection, window params, API key and vendor answers."""

from __future__ import annotations

import gzip
import io
import json
import re
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3

from shared.connectors import SourceAccess
from shared.connectors.base import (
    InvalidConnection,
    InvalidCredentials,
    PageReader,
    UnsupportedSourceType,
    parse_connection,
)
from shared.connectors.endpoints import HostRule
from shared.connectors.http_api import (
    NEXT_PAGE_TOKEN_HEADER,
    HttpApiConnector,
    JsonLinesApiConnector,
    SourceDatasetNotFound,
    SourceRedirected,
    SourceRequestRejected,
    SourceThrottled,
    new_session,
    window_params,
)
from shared.errors import PermanentError, TransientError
from shared.rules.flows import Window, WindowField
from shared.runtime.redaction import EXCERPT_LIMIT
from shared.runtime.secrets import SecretNotFound
from shared.timefmt import isoformat, parse_iso
from tests.fakes import FakePacing, FakeSecretsManager, landed, source_secret
from tests.fakes.pacing import NOW

START = datetime(2026, 11, 21, 18, 40, 2, tzinfo=UTC)
END = datetime(2026, 11, 22, 18, 41, 57, 126486, tzinfo=UTC)
WINDOW = Window(WindowField.LAST_MODIFIED, START, END, False)
GOOD = {"base_url": "https://vendor.test:8080/", "dataset": "listings-a", "page_size": 500}
API_KEY = "k-7f3a9c-not-for-logs"
KEY_SECRET = source_secret("acme-listings", "api-key")


def an_answer(status_code: int, body: Any, *, gzip_encoded: bool = False) -> requests.Response:
    """A vendor's answer as requests hands it over, its body streamed from bytes (a JSON
    document, or the bytes themselves), gzip-encoded on the wire if asked."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if gzip_encoded:
        data, headers["Content-Encoding"] = gzip.compress(data), "gzip"
    response = requests.Response()
    response.status_code = status_code
    response.headers.update(headers)
    response.raw = urllib3.HTTPResponse(
        body=io.BytesIO(data), headers=headers, status=status_code, preload_content=False
    )
    return response


class FakeSession:
    """A requests.Session that answers from a list of (status, body) or ready answers, and
    keeps what it was asked: the headers it carried and the params of each GET."""

    def __init__(self, answers: Sequence[tuple[int, Any] | requests.Response]) -> None:
        self.answers = iter(answers)
        self.headers: dict[str, str] = {}
        self.sent: list[tuple[dict[str, str], dict[str, str]]] = []

    def get(
        self,
        url: str,
        *,
        params: dict[str, str],
        timeout: Any,
        allow_redirects: bool,
        stream: bool = False,
    ) -> Any:
        assert allow_redirects is False  # the key goes only to base_url's host
        self.sent.append((dict(self.headers), dict(params)))
        answer = next(self.answers)
        return answer if isinstance(answer, requests.Response) else an_answer(*answer)

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *_: object) -> None:
        pass


def a_connector(
    access: SourceAccess, session: FakeSession | None = None, **changes: Any
) -> HttpApiConnector:
    connection = parse_connection("acme-listings", "http_api", {**GOOD, **changes})
    connector = HttpApiConnector.from_connection(
        "acme-listings", connection, secrets=access.secrets, hosts=access.hosts
    )
    if session is not None:
        connector.new_session = lambda: session  # type: ignore[assignment,return-value]
    return connector


# --- window params ------------------------------------------------------------------------------


def test_an_inclusive_start_asks_for_one_microsecond_before_it() -> None:
    params = window_params(Window(WindowField.LAST_MODIFIED, START, END, True))
    assert params == {"modified_after": isoformat(START - timedelta(microseconds=1))}
    assert params["modified_after"] == "2026-11-21T18:40:01.999999Z"


def test_an_exclusive_start_is_passed_as_is_and_the_end_is_read_past() -> None:
    # Download counts what is stamped after the window's end (future-dated records).
    params = window_params(WINDOW)
    assert params == {"modified_after": "2026-11-21T18:40:02Z"}


def test_a_sold_window_filters_on_the_sold_date() -> None:
    jan_1 = datetime(2026, 1, 1, tzinfo=UTC)
    params = window_params(Window(WindowField.SOLD_DATE, jan_1, END, True))
    assert params == {"sold_from": "2026-01-01T00:00:00Z", "sold_until": isoformat(END)}


def test_a_backfill_slice_asks_for_its_range_and_nothing_after_it() -> None:
    # [start, end): the API's upper bound is inclusive, one microsecond before the end
    day = timedelta(days=1)
    params = window_params(Window(WindowField.LAST_MODIFIED, START, START + day, True, True))
    assert params == {
        "modified_after": "2026-11-21T18:40:01.999999Z",
        "modified_until": "2026-11-22T18:40:01.999999Z",
    }
    sold = window_params(Window(WindowField.SOLD_DATE, START, START + day, True, True))
    assert sold == {
        "sold_from": "2026-11-21T18:40:02Z",
        "sold_until": "2026-11-22T18:40:01.999999Z",
    }


# --- connection ---------------------------------------------------------------------------------


def test_a_good_connection_builds_a_connector(access: SourceAccess) -> None:
    connector = a_connector(access)
    assert (connector.base_url, connector.dataset, connector.page_size) == (
        "https://vendor.test:8080",
        "listings-a",
        500,
    )
    assert connector.api_key is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"base_url": "vendor.test:8080"}, "connection.base_url"),
        ({"base_url": None}, "connection.base_url"),
        ({"dataset": None}, "connection.dataset"),
        ({"dataset": ""}, "connection.dataset"),
        ({"page_size": 0}, "connection.page_size"),
        ({"page_size": "100"}, "connection.page_size"),
        ({"page_size": True}, "connection.page_size"),
        ({"api_key": API_KEY}, "'api_key' was unexpected"),
        ({"api_key_header": "X-Key"}, "'api_key_secret' is a dependency"),
    ],
)
def test_a_bad_connection_is_rejected_naming_the_field(change: dict[str, Any], field: str) -> None:
    connection = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(InvalidConnection, match=re.escape(field)) as caught:
        parse_connection("acme-listings", "http_api", connection)
    assert str(caught.value).startswith("source 'acme-listings': its http_api connection")
    assert "contracts/connection-http-api.v1.schema.json" in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert caught.value.error_name == "InvalidConnection"


def test_a_connection_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(InvalidConnection, match="connection: is not a JSON object"):
        parse_connection("acme-listings", "http_api", ["base_url"])


def test_an_unknown_source_type_is_named_with_the_known_ones() -> None:
    with pytest.raises(UnsupportedSourceType, match=r"'ftp' is not supported.*'s3_files'"):
        parse_connection("acme-listings", "ftp", {})


# --- API key ------------------------------------------------------------------------------------


def test_the_api_key_is_read_from_its_secret_and_sent_as_a_header(
    access: SourceAccess, secrets_manager: FakeSecretsManager
) -> None:
    # Given a connection naming the secret of its API key and the header to carry it
    secrets_manager.values[KEY_SECRET] = API_KEY
    session = FakeSession(
        [
            (200, {"records": [{"id": "1"}], "next_page_token": "p2"}),
            (200, {"records": [{"id": "2"}], "next_page_token": None}),
        ]
    )
    connector = a_connector(
        access, session, api_key_secret=KEY_SECRET, api_key_header="X-Partner-Key"
    )
    # When the connector is checked and then pages through a window
    connector.check()
    records = list(landed(connector.records(WINDOW)))
    # Then every page carried the key, read from Secrets Manager once
    assert [record["id"] for record in records] == ["1", "2"]
    assert [headers for headers, _ in session.sent] == [{"X-Partner-Key": API_KEY}] * 2
    assert session.sent[1][1]["page_token"] == "p2"
    assert secrets_manager.calls == [KEY_SECRET]


def test_without_an_api_key_no_secret_is_read_and_no_header_sent(
    access: SourceAccess, secrets_manager: FakeSecretsManager
) -> None:
    session = FakeSession([(200, {"records": [], "next_page_token": None})])
    connector = a_connector(access, session)
    connector.check()
    list(connector.records(WINDOW))
    assert session.sent[0][0] == {}
    assert secrets_manager.calls == []


def test_check_fails_fast_when_the_api_key_secret_does_not_exist(access: SourceAccess) -> None:
    missing = source_secret("acme-listings", "missing")
    connector = a_connector(access, api_key_secret=missing)
    with pytest.raises(SecretNotFound, match=re.escape(f"connection.api_key_secret = {missing!r}")):
        connector.check()


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_name_the_secret_and_never_the_key(
    access: SourceAccess, secrets_manager: FakeSecretsManager, status: int
) -> None:
    secrets_manager.values[KEY_SECRET] = API_KEY
    session = FakeSession([(status, {"error": "bad key"})])
    connector = a_connector(access, session, api_key_secret=KEY_SECRET)
    with pytest.raises(InvalidCredentials, match=re.escape(f"the secret {KEY_SECRET!r}")) as caught:
        list(connector.records(WINDOW))
    assert API_KEY not in str(caught.value)


def test_refused_credentials_without_a_key_say_how_to_give_one(access: SourceAccess) -> None:
    connector = a_connector(access, FakeSession([(401, {"error": "key required"})]))
    with pytest.raises(InvalidCredentials, match=r"in connection\.api_key_secret"):
        list(connector.records(WINDOW))


def test_an_unknown_dataset_says_which_setting_to_fix(access: SourceAccess) -> None:
    connector = a_connector(access, FakeSession([(404, {"error": "no such dataset"})]))
    with pytest.raises(SourceDatasetNotFound, match=r"fix connection\.dataset"):
        list(connector.records(WINDOW))


# --- hostile pages (docs/limits.md) -------------------------------------------------------------


def page(*records: Any, token: str | int | None = None) -> tuple[int, dict[str, Any]]:
    return 200, {"records": list(records), "next_page_token": token}


def test_a_gzip_page_is_inflated_as_it_streams_and_stopped_at_the_limit(
    access: SourceAccess,
) -> None:
    # Given a page of 50 KB on the wire that inflates to 50 MB
    body = b'{"records": [' + b" " * 50_000_000 + b'], "next_page_token": null}'
    bomb = an_answer(200, body, gzip_encoded=True)
    del body
    connector = a_connector(access, FakeSession([bomb]), limits={"max_page_bytes": 1 << 20})
    # When the window is read, the page is dropped at its limit, by name
    tracemalloc.start()
    try:
        with pytest.raises(PermanentError) as caught:
            list(connector.records(WINDOW))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.error_name == "PageTooLarge"
    assert "page 1 inflates to more than 1,048,576 bytes" in str(caught.value)
    assert "connection.limits.max_page_bytes = 1,048,576 (default 33,554,432)" in str(caught.value)
    # And never more than a little over the limit was inflated at once
    assert peak < 4 * (1 << 20), f"{peak:,} bytes allocated"


def test_a_repeated_page_token_stops_the_run_at_once(access: SourceAccess) -> None:
    # Given a vendor that hands back the token it was just given, for ever
    session = FakeSession([page({"id": str(n)}, token="same") for n in range(3_000)])
    connector = a_connector(access, session)
    # When the window is read, the second page's token (the first's again) stops it by name
    records: list[dict[str, Any]] = []
    with pytest.raises(PermanentError, match="page 2 sent the same next_page_token as page 1") as (
        caught
    ):
        records.extend(landed(connector.records(WINDOW)))
    assert caught.value.error_name == "PageTokenRepeated"
    assert [record["id"] for record in records] == ["0", "1"]
    assert len(session.sent) == 2


@pytest.mark.parametrize(
    ("limits", "error_name"),
    [
        ({"max_pages": 2}, "TooManyPages"),
        ({"max_records": 5}, "TooManyRecords"),
        ({"max_bytes": 1024}, "TooManyBytes"),
    ],
)
def test_a_run_past_one_of_its_limits_stops_by_its_name(
    access: SourceAccess, limits: dict[str, int], error_name: str
) -> None:
    # Given a vendor whose pages go on, each with new records and a new token
    answers = [
        page(*({"id": f"{n}-{i}", "note": "x" * 200} for i in range(3)), token=f"p{n + 1}")
        for n in range(10)
    ]
    connector = a_connector(access, FakeSession(answers), limits=limits)
    with pytest.raises(PermanentError) as caught:
        list(connector.records(WINDOW))
    assert caught.value.error_name == error_name


@pytest.mark.parametrize(
    ("body", "shape"),
    [
        (b"<html>502 Bad Gateway</html>", "is not JSON"),
        (b"", "is not JSON"),
        (b'[{"id": "1"}]', "is a JSON array, not an object with a records list"),
        (b'"records"', "is a JSON string, not an object with a records list"),
        (b'{"data": []}', "is an object without a records list"),
        (b'{"records": {"id": "1"}}', "is an object without a records list"),
        (b'{"records": [], "next_page_token": ["p2"]}', "next_page_token that is a JSON array"),
        (b"[" * 100_000 + b"]" * 100_000, "is not JSON (depth limit exceeded"),
    ],
)
def test_a_page_that_is_not_a_records_page_stops_the_run_by_name(
    access: SourceAccess, body: bytes, shape: str
) -> None:
    connector = a_connector(access, FakeSession([an_answer(200, body)]))
    with pytest.raises(PermanentError, match=re.escape(shape)) as caught:
        list(connector.records(WINDOW))
    assert caught.value.error_name == "MalformedPage"
    assert str(caught.value).startswith("source 'acme-listings': ")
    assert "<html>" not in str(caught.value)  # the vendor's text is not repeated


def test_a_page_whose_gzip_is_broken_stops_the_run_by_name(access: SourceAccess) -> None:
    broken = an_answer(200, b"not gzip at all")
    broken.headers["Content-Encoding"] = "gzip"
    broken.raw.headers["Content-Encoding"] = "gzip"
    connector = a_connector(access, FakeSession([broken]))
    with pytest.raises(PermanentError, match="does not inflate") as caught:
        list(connector.records(WINDOW))
    assert caught.value.error_name == "MalformedPage"


def test_records_that_are_not_objects_are_counted_and_the_rest_load(access: SourceAccess) -> None:
    session = FakeSession(
        [page({"id": "1"}, "2", [3], token=7), page(None, {"id": "4"})]  # a numeric token
    )
    connector = a_connector(access, session)
    assert [record["id"] for record in landed(connector.records(WINDOW))] == ["1", "4"]
    assert session.sent[1][1]["page_token"] == "7"
    assert connector.malformed.examples == [
        "page 1 record 2: is a JSON string, not an object",
        "page 1 record 3: is a JSON array, not an object",
        "page 2 record 1: is a JSON null, not an object",
    ]


@pytest.mark.parametrize(
    "value", ["yesterday", "2026-13-01T00:00:00Z", "9999-12-31T23:59:59-05:00", 20261121, None]
)
def test_a_last_modified_that_is_no_date_is_no_stamp(access: SourceAccess, value: Any) -> None:
    # Download counts such a record as malformed (services.download.domain.StreamProgress).
    assert a_connector(access).last_modified({"id": "1", "last_modified": value}) is None


def test_an_error_answer_is_read_only_as_far_as_its_message(access: SourceAccess) -> None:
    # Given a 400 whose body is a JSON array, inflating to 50 MB
    huge = an_answer(400, b"[" + b" " * 50_000_000 + b"]", gzip_encoded=True)
    connector = a_connector(access, FakeSession([huge]))
    with pytest.raises(SourceRequestRejected, match="rejected the request with 400") as caught:
        list(connector.records(WINDOW))
    assert len(str(caught.value)) < 1000


# --- the key stays home: redirects, and what a vendor says ------------------------------------


@pytest.mark.parametrize(
    ("location", "where"),
    [
        ("https://collector.example/steal", "to another host (https collector.example)"),
        ("http://vendor.test:8080/datasets/listings-a/records", "to another host (http "),
        ("https://vendor.test:9999/x", "to another host (https vendor.test:9999)"),
        ("/v2/datasets/listings-a/records", "within its host"),
    ],
)
def test_a_redirect_is_never_followed_and_fails_by_name(
    access: SourceAccess, secrets_manager: FakeSecretsManager, location: str, where: str
) -> None:
    # Given a vendor that answers the first page with a redirect (another scheme, host or port,
    # or the same origin)
    secrets_manager.values[KEY_SECRET] = API_KEY
    redirect = an_answer(302, {})
    redirect.headers["Location"] = location
    session = FakeSession([redirect])
    connector = a_connector(access, session, api_key_secret=KEY_SECRET)

    # When the connector reads, Then the redirect is refused by name, and only one request (to
    # base_url's host) carried the key
    with pytest.raises(SourceRedirected, match=re.escape(f"a redirect {where}")) as caught:
        list(connector.records(WINDOW))
    assert "fix connection.base_url" in str(caught.value)
    assert caught.value.error_name == "SourceRedirected"
    assert len(session.sent) == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, SourceRequestRejected), (401, InvalidCredentials), (500, TransientError)],
)
def test_a_vendors_error_body_is_quoted_as_a_short_excerpt_without_the_key_or_links(
    access: SourceAccess, secrets_manager: FakeSecretsManager, status: int, error: type
) -> None:
    # Given a vendor whose error answer echoes the request's headers and invites a click,
    # on several lines and at length
    secrets_manager.values[KEY_SECRET] = API_KEY
    body = {
        "error": f"bad request\r\nX-Api-Key: {API_KEY}\n\x1b[31mclick http://evil.example/login"
        " or www.evil.example now\u202e " + "x" * 1000
    }
    connector = a_connector(access, FakeSession([(status, body)]), api_key_secret=KEY_SECRET)

    # When the connector reads
    with pytest.raises(error) as caught:
        list(connector.records(WINDOW))

    # Then the error quotes the vendor briefly, on one line, without the key or the links
    text = str(caught.value)
    assert API_KEY not in text
    assert "evil.example" not in text
    assert "[link removed]" in text and "[redacted]" in text
    assert not any(char in text for char in "\r\n\x1b\u202e")
    quoted = re.search(r"the vendor said: '([^']*)'", text)
    assert quoted is not None, text
    assert len(quoted.group(1)) == EXCERPT_LIMIT and quoted.group(1).endswith("x…")


# --- resuming a download (a continued or redelivered invocation) ---------------------------------


def positions(connector: HttpApiConnector, window: Window = WINDOW) -> list[tuple[str | None, Any]]:
    """Each record's id (None: a check-in), and the position the connector gives right after."""
    return [
        (None if record is None else record["id"], connector.position)
        for record in connector.records(window)
    ]


def test_a_download_may_resume_only_after_a_page(access: SourceAccess) -> None:
    # Given two pages, the first ending with a record that is not an object
    first, second = page({"id": "1"}, {"id": "2"}, 7, token="p2"), page({"id": "3"})
    connector = a_connector(access, FakeSession([first, second]))
    # Then the position is given only at the check-in after each page: the next page's token,
    # and what the run has read so far (the next page, read ahead meanwhile, not counted)
    size = [len(json.dumps(body)) for _, body in (first, second)]
    assert positions(connector) == [
        ("1", None),
        ("2", None),
        (None, {"page_token": "p2", "read": {"pages": 1, "records": 3, "bytes": size[0]}}),
        ("3", None),
        (None, {"page_token": None, "read": {"pages": 2, "records": 4, "bytes": sum(size)}}),
    ]


def test_a_resumed_read_asks_for_the_page_after_the_position_and_counts_on(
    access: SourceAccess,
) -> None:
    # Given a position after the second of three pages, a run allowed three pages
    session = FakeSession([page({"id": "5"}, token="p4"), page({"id": "6"})])
    connector = a_connector(access, session, limits={"max_pages": 3})
    resume = {"page_token": "p3", "read": {"pages": 2, "records": 4, "bytes": 100}}
    # When the read resumes from it, Then it starts at that page, and its limits count on
    records: list[str] = []
    with pytest.raises(PermanentError) as caught:
        records.extend(record["id"] for record in landed(connector.records(WINDOW, resume)))
    assert records == ["5"] and caught.value.error_name == "TooManyPages"
    assert session.sent[0][1]["page_token"] == "p3"


def test_a_read_resumed_after_the_last_page_reads_nothing(access: SourceAccess) -> None:
    session = FakeSession([])
    connector = a_connector(access, session)
    resume = {"page_token": None, "read": {"pages": 4, "records": 4, "bytes": 400}}
    assert list(connector.records(WINDOW, resume)) == []
    assert session.sent == []


def test_an_empty_page_checks_in_with_the_next_pages_token(access: SourceAccess) -> None:
    connector = a_connector(access, FakeSession([page(token="p2"), page({"id": "1"})]))
    read = [(record, connector.position) for record in connector.records(WINDOW)]
    assert [record for record, _ in read] == [None, {"id": "1"}, None]
    assert read[0][1] is not None and read[0][1]["page_token"] == "p2"


# --- a vendor asking to slow down: 429 and 503, Retry-After, its concurrency slot -----------------


def throttled(status: int, retry_after: str | None = None) -> requests.Response:
    answer = an_answer(status, {"error": "slow down"})
    if retry_after is not None:
        answer.headers["Retry-After"] = retry_after
    return answer


def a_paced_connector(
    access: SourceAccess, session: FakeSession, pacing: FakePacing
) -> HttpApiConnector:
    connector = a_connector(access, session)
    connector.pacing = pacing.pacing()
    return connector


@pytest.mark.parametrize("status", [429, 503])
def test_a_throttled_page_is_asked_again_after_its_retry_after_without_starting_over(
    access: SourceAccess, status: int
) -> None:
    # Given a vendor that throttles the second page once, asking for 7 seconds
    session = FakeSession(
        [page({"id": "1"}, token="p2"), throttled(status, "7"), page({"id": "2"})]
    )
    pacing = FakePacing()
    connector = a_paced_connector(access, session, pacing)

    # When the window is read
    records = list(landed(connector.records(WINDOW)))

    # Then the second page was asked for again after 7 seconds, and nothing was read twice
    assert [record["id"] for record in records] == ["1", "2"]
    assert pacing.waits == [7.0]
    assert [params.get("page_token") for _, params in session.sent] == [None, "p2", "p2"]


def test_a_retry_after_date_is_waited_until(access: SourceAccess) -> None:
    # Given a 429 asking to come back at an HTTP-date 30 seconds from now
    session = FakeSession([throttled(429, "Sun, 22 Nov 2026 09:00:30 GMT"), page({"id": "1"})])
    pacing = FakePacing(now=NOW)
    # When the window is read, Then the page waited those 30 seconds
    assert len(list(landed(a_paced_connector(access, session, pacing).records(WINDOW)))) == 1
    assert pacing.waits == [30.0]


def test_without_a_retry_after_the_waits_double(access: SourceAccess) -> None:
    # Given a vendor that answers 503 three times without saying how long to wait
    session = FakeSession([throttled(503), throttled(503), throttled(503), page({"id": "1"})])
    pacing = FakePacing()
    # When the window is read, Then each wait doubled the one before, and the page came
    assert len(list(landed(a_paced_connector(access, session, pacing).records(WINDOW)))) == 1
    assert pacing.waits == [1.0, 2.0, 4.0]


def test_the_jitter_lengthens_a_wait_and_never_shortens_it(access: SourceAccess) -> None:
    session = FakeSession([throttled(429, "8"), page({"id": "1"})])
    pacing = FakePacing(draw=0.5)
    list(a_paced_connector(access, session, pacing).records(WINDOW))
    assert pacing.waits == [8.0 * (1 + 0.25 * 0.5)]


def test_a_vendor_asking_past_the_max_wait_stops_the_download_by_name_without_waiting(
    access: SourceAccess,
) -> None:
    # Given a vendor that asks the first page to wait an hour, past the 120 s a page may wait
    session = FakeSession([throttled(429, "3600")])
    pacing = FakePacing(max_wait_seconds=120)

    # When the window is read, Then the download yields by name: a transient error, retried
    with pytest.raises(SourceThrottled) as caught:
        list(a_paced_connector(access, session, pacing).records(WINDOW))
    assert isinstance(caught.value, TransientError)
    assert caught.value.error_name == "SourceThrottled"
    assert pacing.waits == []
    text = str(caught.value)
    assert "answered page 1 with 429 (the vendor said: 'slow down')" in text
    assert "asking for 3,600 s more (Retry-After)" in text
    assert "past the 120 s one page may wait (VENDOR_MAX_WAIT_SECONDS)" in text


def test_a_page_throttled_over_and_over_waits_no_longer_than_the_max_wait(
    access: SourceAccess,
) -> None:
    # Given a vendor that answers every request with 429 and "come back in 1 second"
    session = FakeSession([throttled(429, "1") for _ in range(100)])
    pacing = FakePacing(max_wait_seconds=10, draw=0.9)
    # When the window is read, Then the page waited at most 10 seconds in all, then stopped
    with pytest.raises(SourceThrottled, match=r"after \d+ wait\(s\) of 10 s in all"):
        list(a_paced_connector(access, session, pacing).records(WINDOW))
    assert 10 - 1 < sum(pacing.waits) <= 10  # the next wait, a second at least, did not fit
    assert len(session.sent) == len(pacing.waits) + 1


def test_the_vendors_slot_is_held_from_before_the_first_request_to_after_the_last(
    access: SourceAccess,
) -> None:
    session = FakeSession([page({"id": "1"}, token="p2"), page({"id": "2"})])
    pacing = FakePacing()
    connector = a_paced_connector(access, session, pacing)
    records = connector.records(WINDOW)
    next(records)
    assert pacing.events == [("slot", "vendor.test:8080")]
    list(records)
    assert pacing.events == [("slot", "vendor.test:8080"), ("free", "vendor.test:8080")]
    assert len(session.sent) == 2


def test_a_download_that_fails_gives_its_slot_back(access: SourceAccess) -> None:
    session = FakeSession([(404, {"error": "no such dataset"})])
    pacing = FakePacing()
    with pytest.raises(SourceDatasetNotFound):
        list(a_paced_connector(access, session, pacing).records(WINDOW))
    assert pacing.events == [("slot", "vendor.test:8080"), ("free", "vendor.test:8080")]


def test_the_session_leaves_429_and_503_to_the_connector() -> None:
    # urllib3 would sleep whatever Retry-After says, unbounded, with no heartbeat meanwhile
    adapter = new_session(HostRule(allow_loopback=False), "acme-listings").get_adapter(
        "https://vendor.test"
    )
    assert isinstance(adapter, requests.adapters.HTTPAdapter)
    retry = adapter.max_retries
    assert set(retry.status_forcelist or ()) == {502, 504}
    assert retry.respect_retry_after_header is False


# --- JSON lines (connection.format "jsonl") -----------------------------------------------------

STAMP = "2026-11-22T10:00:00Z"


def lines_page(*lines: Any, token: str | None = None) -> requests.Response:
    """A JSON-lines answer: each of `lines` as its JSON (bytes as they are), one a line."""
    body = b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )
    answer = an_answer(200, body)
    answer.headers[NEXT_PAGE_TOKEN_HEADER] = token or ""
    return answer


def a_lines_connector(
    access: SourceAccess, session: FakeSession, **changes: Any
) -> JsonLinesApiConnector:
    connector = a_connector(access, session, format="jsonl", **changes)
    assert isinstance(connector, JsonLinesApiConnector)
    return connector


def a_record(key: str, **fields: Any) -> dict[str, Any]:
    return {"id": key, "last_modified": STAMP, "note": "é", **fields}


def test_a_json_lines_source_asks_for_them_and_lands_its_pages_as_they_came(
    access: SourceAccess,
) -> None:
    # Given a vendor answering JSON lines, the next page's token in a header
    first = [a_record("1"), a_record("2", last_modified="2026-11-22T11:00:00+01:00")]
    session = FakeSession([lines_page(*first, token="p2"), lines_page(a_record("3"))])
    connector = a_lines_connector(access, session)
    # When its window is read a page at a time
    assert isinstance(connector, PageReader)
    pages = list(connector.pages(WINDOW))
    # Then each request asked for JSON lines, the second with the first's token
    assert [params.get("format") for _, params in session.sent] == ["jsonl", "jsonl"]
    assert session.sent[1][1]["page_token"] == "p2"
    # And each page is the vendor's own bytes, with each record's stamp (in UTC) and key
    assert pages[0].lines == b"".join(json.dumps(r).encode() + b"\n" for r in first)
    assert pages[0].stamps == [parse_iso(STAMP), parse_iso(STAMP)]
    assert pages[0].stamps[1] is not None and pages[0].stamps[1].tzinfo is UTC
    assert (pages[0].keys, pages[1].keys, pages[1].read) == (["1", "2"], ["3"], 1)
    assert connector.malformed.count == 0


def test_json_lines_that_are_no_objects_are_counted_and_the_rest_land_as_they_came(
    access: SourceAccess,
) -> None:
    # Given a page with a line that is not JSON, an array, a blank line, bytes not UTF-8 and
    # two objects on one line
    good = json.dumps(a_record("1")).encode()
    page_lines = [good, b"{not json", b"[1]", b"", b'{"id": "\xff"}', good + b" " + good, good]
    connector = a_lines_connector(access, FakeSession([lines_page(*page_lines)]))
    [page] = list(connector.pages(WINDOW))
    # Then the objects land as they came, and each other line is counted as malformed
    assert page.lines == good + b"\n" + good + b"\n"
    assert (page.keys, page.read) == (["1", "1"], 6)
    assert [example.split(":")[0] for example in connector.malformed.examples] == [
        "page 1 record 2",
        "page 1 record 3",
        "page 1 record 4",
        "page 1 record 5",
    ]
    assert "is a JSON array, not an object" in connector.malformed.examples[1]


def test_a_json_lines_page_without_a_single_object_stops_the_run_by_name(
    access: SourceAccess,
) -> None:
    html = an_answer(200, b"<html>\n<body>502 Bad Gateway</body>\n</html>\n")
    connector = a_lines_connector(access, FakeSession([html]))
    with pytest.raises(PermanentError, match="has no line that is a JSON object") as caught:
        list(connector.pages(WINDOW))
    assert caught.value.error_name == "MalformedPage"


def test_json_lines_count_against_the_runs_record_limit(access: SourceAccess) -> None:
    pages = [lines_page(*(a_record(f"{n}-{i}") for i in range(3))) for n in range(3)]
    for n, answer in enumerate(pages[:-1]):
        answer.headers[NEXT_PAGE_TOKEN_HEADER] = f"p{n + 1}"
    connector = a_lines_connector(access, FakeSession(pages), limits={"max_records": 5})
    with pytest.raises(PermanentError) as caught:
        list(connector.pages(WINDOW))
    assert caught.value.error_name == "TooManyRecords"


def test_json_lines_records_are_the_pages_records(access: SourceAccess) -> None:
    session = FakeSession([lines_page(a_record("1"), a_record("2"))])
    connector = a_lines_connector(access, session)
    assert [record["id"] for record in landed(connector.records(WINDOW))] == ["1", "2"]


def test_a_request_carries_nothing_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given credentials for the vendor's host in a netrc file, and a proxy, in the environment
    netrc = tmp_path / "netrc"
    netrc.write_text("machine vendor.test login someone password not-for-vendors\n")
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    session = new_session(HostRule(allow_loopback=False), "acme-listings")
    # When a page request is made ready
    url = "https://vendor.test:8080/datasets/listings-a/records"
    prepared = session.prepare_request(requests.Request("GET", url))
    settings = session.merge_environment_settings(url, {}, None, None, None)
    # Then it carries no credentials and goes through no proxy
    assert "Authorization" not in prepared.headers
    assert settings["proxies"] == {}

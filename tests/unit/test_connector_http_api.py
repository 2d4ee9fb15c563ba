"""The http_api connector: its connection, window params, API key and vendor answers."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.connectors import SourceAccess
from shared.connectors.base import (
    InvalidConnection,
    InvalidCredentials,
    UnsupportedSourceType,
    parse_connection,
)
from shared.connectors.http_api import (
    HttpApiConnector,
    SourceDatasetNotFound,
    SourceRedirected,
    SourceRequestRejected,
    _window_params,
)
from shared.errors import TransientError
from shared.rules.flows import Window, WindowField
from shared.runtime.redaction import EXCERPT_LIMIT
from shared.runtime.secrets import SecretNotFound
from shared.timefmt import isoformat
from tests.fakes import FakeSecretsManager, source_secret

START = datetime(2026, 11, 21, 18, 40, 2, tzinfo=UTC)
END = datetime(2026, 11, 22, 18, 41, 57, 126486, tzinfo=UTC)
WINDOW = Window(WindowField.LAST_MODIFIED, START, END, False)
GOOD = {"base_url": "https://vendor.test:8080/", "dataset": "listings-a", "page_size": 500}
API_KEY = "k-7f3a9c-not-for-logs"
KEY_SECRET = source_secret("acme-listings", "api-key")


class FakeResponse:
    def __init__(
        self, status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self.status_code, self._body = status_code, body
        self.text = str(body)
        self.content = json.dumps(body).encode()
        self.headers = headers or {}

    def json(self) -> dict[str, Any]:
        return self._body


class FakeSession:
    """A requests.Session that answers from a list of (status, body) and keeps what it was
    asked: the headers it carried and the params of each GET."""

    def __init__(self, answers: list[tuple[Any, ...]]) -> None:
        self.answers = iter(answers)
        self.headers: dict[str, str] = {}
        self.sent: list[tuple[dict[str, str], dict[str, str]]] = []

    def get(
        self, url: str, *, params: dict[str, str], timeout: Any, allow_redirects: bool
    ) -> FakeResponse:
        assert allow_redirects is False  # the key goes only to base_url's host
        self.sent.append((dict(self.headers), dict(params)))
        return FakeResponse(*next(self.answers))

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
    params = _window_params(Window(WindowField.LAST_MODIFIED, START, END, True))
    assert params == {"modified_after": isoformat(START - timedelta(microseconds=1))}
    assert params["modified_after"] == "2026-11-21T18:40:01.999999Z"


def test_an_exclusive_start_is_passed_as_is_and_the_end_is_read_past() -> None:
    # Download counts what is stamped after the window's end (future-dated records).
    params = _window_params(WINDOW)
    assert params == {"modified_after": "2026-11-21T18:40:02Z"}


def test_a_sold_window_filters_on_the_sold_date() -> None:
    jan_1 = datetime(2026, 1, 1, tzinfo=UTC)
    params = _window_params(Window(WindowField.SOLD_DATE, jan_1, END, True))
    assert params == {"sold_from": "2026-01-01T00:00:00Z", "sold_until": isoformat(END)}


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
    records = list(connector.records(WINDOW))
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
    session = FakeSession([(302, {}, {"Location": location})])
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

"""The http_api connector: its connection, window params, API key and vendor answers."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.connectors.base import (
    InvalidConnection,
    InvalidCredentials,
    UnsupportedSourceType,
    parse_connection,
)
from shared.connectors.http_api import HttpApiConnector, SourceDatasetNotFound, _window_params
from shared.rules.flows import Window, WindowField
from shared.runtime.secrets import SecretNotFound, Secrets
from shared.timefmt import isoformat
from tests.fakes import FakeSecretsManager

START = datetime(2026, 11, 21, 18, 40, 2, tzinfo=UTC)
END = datetime(2026, 11, 22, 18, 41, 57, 126486, tzinfo=UTC)
WINDOW = Window(WindowField.LAST_MODIFIED, START, END, False)
GOOD = {"base_url": "http://vendor.test:8080/", "dataset": "listings-a", "page_size": 500}
API_KEY = "k-7f3a9c-not-for-logs"


class FakeResponse:
    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        self.status_code, self._body = status_code, body
        self.text = str(body)
        self.content = json.dumps(body).encode()

    def json(self) -> dict[str, Any]:
        return self._body


class FakeSession:
    """A requests.Session that answers from a list of (status, body) and keeps what it was
    asked: the headers it carried and the params of each GET."""

    def __init__(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        self.answers = iter(answers)
        self.headers: dict[str, str] = {}
        self.sent: list[tuple[dict[str, str], dict[str, str]]] = []

    def get(self, url: str, *, params: dict[str, str], timeout: Any) -> FakeResponse:
        self.sent.append((dict(self.headers), dict(params)))
        return FakeResponse(*next(self.answers))

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *_: object) -> None:
        pass


def a_connector(
    secrets: Secrets, session: FakeSession | None = None, **changes: Any
) -> HttpApiConnector:
    connection = parse_connection("acme-listings", "http_api", {**GOOD, **changes})
    connector = HttpApiConnector.from_connection("acme-listings", connection, secrets=secrets)
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


def test_a_backfill_slice_asks_for_its_range_and_nothing_after_it() -> None:
    # [start, end): the API's upper bound is inclusive, one microsecond before the end
    day = timedelta(days=1)
    params = _window_params(Window(WindowField.LAST_MODIFIED, START, START + day, True, True))
    assert params == {
        "modified_after": "2026-11-21T18:40:01.999999Z",
        "modified_until": "2026-11-22T18:40:01.999999Z",
    }
    sold = _window_params(Window(WindowField.SOLD_DATE, START, START + day, True, True))
    assert sold == {
        "sold_from": "2026-11-21T18:40:02Z",
        "sold_until": "2026-11-22T18:40:01.999999Z",
    }


# --- connection ---------------------------------------------------------------------------------


def test_a_good_connection_builds_a_connector(secrets: Secrets) -> None:
    connector = a_connector(secrets)
    assert (connector.base_url, connector.dataset, connector.page_size) == (
        "http://vendor.test:8080",
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
    secrets: Secrets, secrets_manager: FakeSecretsManager
) -> None:
    # Given a connection naming the secret of its API key and the header to carry it
    secrets_manager.values["sourceflow/acme-api"] = API_KEY
    session = FakeSession(
        [
            (200, {"records": [{"id": "1"}], "next_page_token": "p2"}),
            (200, {"records": [{"id": "2"}], "next_page_token": None}),
        ]
    )
    connector = a_connector(
        secrets, session, api_key_secret="sourceflow/acme-api", api_key_header="X-Partner-Key"
    )
    # When the connector is checked and then pages through a window
    connector.check()
    records = list(connector.records(WINDOW))
    # Then every page carried the key, read from Secrets Manager once
    assert [record["id"] for record in records] == ["1", "2"]
    assert [headers for headers, _ in session.sent] == [{"X-Partner-Key": API_KEY}] * 2
    assert session.sent[1][1]["page_token"] == "p2"
    assert secrets_manager.calls == ["sourceflow/acme-api"]


def test_without_an_api_key_no_secret_is_read_and_no_header_sent(
    secrets: Secrets, secrets_manager: FakeSecretsManager
) -> None:
    session = FakeSession([(200, {"records": [], "next_page_token": None})])
    connector = a_connector(secrets, session)
    connector.check()
    list(connector.records(WINDOW))
    assert session.sent[0][0] == {}
    assert secrets_manager.calls == []


def test_check_fails_fast_when_the_api_key_secret_does_not_exist(secrets: Secrets) -> None:
    connector = a_connector(secrets, api_key_secret="sourceflow/missing")
    with pytest.raises(SecretNotFound, match=r"connection.api_key_secret = 'sourceflow/missing'"):
        connector.check()


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_name_the_secret_and_never_the_key(
    secrets: Secrets, secrets_manager: FakeSecretsManager, status: int
) -> None:
    secrets_manager.values["sourceflow/acme-api"] = API_KEY
    session = FakeSession([(status, {"error": "bad key"})])
    connector = a_connector(secrets, session, api_key_secret="sourceflow/acme-api")
    with pytest.raises(InvalidCredentials, match="the secret 'sourceflow/acme-api'") as caught:
        list(connector.records(WINDOW))
    assert API_KEY not in str(caught.value)


def test_refused_credentials_without_a_key_say_how_to_give_one(secrets: Secrets) -> None:
    connector = a_connector(secrets, FakeSession([(401, {"error": "key required"})]))
    with pytest.raises(InvalidCredentials, match=r"in connection\.api_key_secret"):
        list(connector.records(WINDOW))


def test_an_unknown_dataset_says_which_setting_to_fix(secrets: Secrets) -> None:
    connector = a_connector(secrets, FakeSession([(404, {"error": "no such dataset"})]))
    with pytest.raises(SourceDatasetNotFound, match=r"fix connection\.dataset"):
        list(connector.records(WINDOW))

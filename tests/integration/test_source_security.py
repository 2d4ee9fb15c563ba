"""What a hostile source gets from sourceflow, over real sockets on 127.0.0.1: a vendor that
redirects elsewhere gets no API key sent there, a connection to a loopback address outside the
embedded stack sends nothing, and a PostgreSQL server that asks for the password in clear text
(or as md5) gets nothing (tests/fakes/hostile.py plays the attacker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import requests

from services.unlocking.service import unlock_run
from shared.connectors import SourceAccess
from shared.connectors.base import parse_connection
from shared.connectors.endpoints import HostRule, SourceHostNotAllowed
from shared.connectors.http_api import HttpApiConnector, SourceRedirected, new_session
from shared.connectors.postgres import InsecureAuthentication, PostgresConnector
from shared.rules.flows import Window, WindowField
from shared.store.db import Database
from tests.fakes import FakeSecretsManager, fake_access, source_secret
from tests.fakes.hostile import CLEARTEXT, MD5, Answer, SentRequest, serving_http, serving_postgres
from tests.integration.conftest import RESPECS, MakeSource, NewExecution, run_row

SOURCE = "acme"
API_KEY = "key-5f0e2c7a-for-acme-only"
PASSWORD = "pw-9a1c-for-the-partner-only"
KEY_SECRET = source_secret(SOURCE, "api-key")
PASSWORD_SECRET = source_secret(SOURCE, "partner-db")
NOW = datetime.now(UTC)
WINDOW = Window(WindowField.LAST_MODIFIED, NOW - timedelta(days=1), NOW, False)


def embedded_access() -> SourceAccess:
    """As the embedded stack's workers have it: the test's servers are on loopback."""
    secrets_manager = FakeSecretsManager({KEY_SECRET: API_KEY, PASSWORD_SECRET: PASSWORD})
    return fake_access(secrets_manager, allow_loopback=True)


def records_page(_: SentRequest) -> Answer:
    return Answer(200, b'{"records": [], "next_page_token": null}')


# --- an API key goes only to the connection's own host ----------------------------------------


def test_requests_itself_carries_a_custom_key_header_across_hosts_on_a_redirect() -> None:
    # Why sourceflow follows no redirect: requests strips Authorization when the host changes,
    # but a custom header such as X-Api-Key goes wherever the vendor sends it.
    with (
        serving_http(records_page) as collector,
        serving_http(lambda _: Answer(302, headers={"Location": f"{collector.url}/x"})) as vendor,
    ):
        requests.get(f"{vendor.url}/datasets/d/records", headers={"X-Api-Key": API_KEY}, timeout=10)
    assert [request.headers.get("X-Api-Key") for request in collector.received] == [API_KEY]


@pytest.mark.parametrize("elsewhere", ["another port", "the same host"])
def test_a_redirect_is_refused_by_name_and_the_key_goes_nowhere_else(elsewhere: str) -> None:
    # Given a vendor that redirects the records request to a collector on another port (another
    # origin), or to another path of its own
    with serving_http(records_page) as collector:

        def redirect(request: SentRequest) -> Answer:
            target = f"{collector.url}/steal" if elsewhere == "another port" else "/other"
            return Answer(307, headers={"Location": target})

        with serving_http(redirect) as vendor:
            connection = parse_connection(
                SOURCE,
                "http_api",
                {"base_url": vendor.url, "dataset": "d", "api_key_secret": KEY_SECRET},
            )
            access = embedded_access()
            connector = HttpApiConnector.from_connection(
                SOURCE, connection, secrets=access.secrets, hosts=access.hosts
            )

            # When the connector reads a window
            with pytest.raises(SourceRedirected) as caught:
                list(connector.records(WINDOW))

    # Then it stopped at the redirect, by name: the key went once, to base_url's host only
    assert caught.value.error_name == "SourceRedirected"
    assert [request.headers.get("X-Api-Key") for request in vendor.received] == [API_KEY]
    assert collector.received == []


def test_outside_the_embedded_stack_a_loopback_address_is_refused_before_a_byte_is_sent() -> None:
    # Given a session as the cloud's functions have it (no loopback), and a server on loopback
    # reached by its address (what a name resolving, or rebinding, to loopback connects to)
    with serving_http(records_page) as local_service:
        session = new_session(HostRule(allow_loopback=False), SOURCE)
        session.headers["X-Api-Key"] = API_KEY
        # When a request is made, Then the connection is refused by name once it is open,
        # before the request (and its key) is sent
        with pytest.raises(SourceHostNotAllowed, match=r"127\.0\.0\.1, loopback") as caught:
            session.get(f"{local_service.url}/datasets/d/records", timeout=10)
    assert "source 'acme'" in str(caught.value)
    assert local_service.received == []


# --- a postgres password only with SCRAM -------------------------------------------------------


@pytest.mark.parametrize("method", [CLEARTEXT, MD5], ids=["cleartext", "md5"])
def test_a_server_asking_for_the_password_outside_scram_gets_nothing(method: int) -> None:
    # Given a "partner database" that asks for the password in clear text (or as md5)
    with serving_postgres(method) as hostile:
        connection = parse_connection(
            SOURCE,
            "postgres",
            {
                "dsn": f"host=127.0.0.1 port={hostile.port} dbname=partner user=reader",
                "password_secret": PASSWORD_SECRET,
                "table": "listings",
                "last_modified_column": "updated_at",
                "sold_date_column": "sold_at",
            },
        )
        access = embedded_access()
        connector = PostgresConnector.from_connection(
            SOURCE, connection, secrets=access.secrets, hosts=access.hosts
        )

        # When validation checks the connection
        with pytest.raises(InsecureAuthentication) as caught:
            connector.check()

    # Then it is refused by name, and the server got no password (nor any hash of it)
    assert hostile.passwords == []
    assert "did not offer SCRAM-SHA-256" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_the_access_built_for_the_embedded_stack_reaches_its_partner_with_scram(
    migrated_url: str,
) -> None:
    # The integration tier's PostgreSQL speaks SCRAM (local/pg.py): the demand is met.
    from psycopg2.extensions import make_dsn, parse_dsn

    parts = cast(dict[str, Any], parse_dsn(migrated_url))
    password = parts.pop("password")
    secret = source_secret(SOURCE, "db")
    access = fake_access(FakeSecretsManager({secret: password}), allow_loopback=True)
    connection = parse_connection(
        SOURCE,
        "postgres",
        {
            "dsn": make_dsn(**parts),
            "password_secret": secret,
            "table": "source",
            "last_modified_column": "updated_at",
            "sold_date_column": "created_at",
        },
    )
    access.check(SOURCE, "postgres", connection)


# --- what unlocking keeps of a cause Step Functions wrote ---------------------------------------


@pytest.mark.parametrize(
    ("cause", "kept"),
    [
        (None, None),  # the emulator drops a SendTaskFailure's cause; a timeout has none
        ("line one\r\nline two \x1b[0mclick", "line one line two [0mclick"),
    ],
)
def test_unlocking_keeps_a_step_functions_cause_cleaned_or_none(
    db: Database,
    make_source: MakeSource,
    new_execution: NewExecution,
    cause: str | None,
    kept: str | None,
) -> None:
    # Given a run that failed in a step whose cause (null, or on several lines) Step Functions
    # wrote, and that no service recorded
    execution = new_execution(make_source(runtime_count=1))
    request = execution.unlock_failed(step="Validate", error="States.Timeout")
    request["failure"]["Cause"] = cause

    # When unlocking ends the run
    unlock_run(request, db=db, respecs=RESPECS)

    # Then the ledger keeps the cause on one line, or nothing
    row = run_row(db, execution.arn)
    assert row is not None
    assert (row["status"], row["error_detail"]) == ("failed", kept)

"""shared.connectors.endpoints: base_url and DSNs parsed, not pattern-matched, and the hosts a
source may reach (loopback only on the embedded stack; link-local never)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from shared.connectors import SourceAccess
from shared.connectors.base import InvalidConnection, parse_connection
from shared.connectors.endpoints import (
    HostRule,
    SourceHostNotAllowed,
    ip_literal,
    parse_base_url,
    parse_libpq_settings,
    pinned_address,
)
from tests.fakes import fake_access, source_secret

CLOUD, EMBEDDED = HostRule(allow_loopback=False), HostRule(allow_loopback=True)
SOURCE = "acme"


def base_url(text: str, rule: HostRule = CLOUD, *, carries_key: bool = False) -> str:
    return parse_base_url(SOURCE, text, rule, carries_key=carries_key)


# --- base_url ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("https://api.vendor.example", "https://api.vendor.example"),
        ("https://api.vendor.example:8443/", "https://api.vendor.example:8443"),
        ("https://api.vendor.example/v2/listings/", "https://api.vendor.example/v2/listings"),
        ("http://10.0.3.4:8080", "http://10.0.3.4:8080"),  # a private host: a partner's VPC
    ],
)
def test_a_plain_base_url_is_kept_without_its_trailing_slash(text: str, parsed: str) -> None:
    assert base_url(text) == parsed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("http://host/internal/admin?all=1#", "has a query or a fragment"),
        ("https://api.vendor.example/?", "has a query or a fragment"),
        ("https://api.vendor.example/#x", "has a query or a fragment"),
        ("https://user:pw@api.vendor.example", "carries a user or password"),
        ("https://user@api.vendor.example", "carries a user or password"),
        ("ftp://api.vendor.example", "must start with http:// or https://"),
        ("https://api.vendor.example/a/../admin", "a . or .. segment"),
        ("https://api.vendor.example/a%2f..%2fadmin", "characters other than"),
        ("https://api.vendor.example:99999", "is not a URL"),
        ("https://api_vendor!.example", "no host name sourceflow accepts"),
        ("https://", "no host name sourceflow accepts"),
        ("https://api.vendor.example/\r\nX-Injected: 1", "spaces or control characters"),
        ("https://api.vendor.example/a b", "spaces or control characters"),
        ("https://api.vendor\t.example", "spaces or control characters"),
    ],
)
def test_a_base_url_with_more_than_a_host_and_a_plain_path_is_refused(text: str, says: str) -> None:
    with pytest.raises(InvalidConnection, match=says) as caught:
        base_url(text)
    assert str(caught.value).startswith("source 'acme': connection.base_url")
    assert "pw" not in str(caught.value).replace("password", "")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("http://169.254.169.254/latest", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00:ec2::254]/", "instance metadata"),
        ("http://0.0.0.0:8080", "unspecified"),
        ("http://127.0.0.1:9001", "loopback"),
        ("http://127.1:9001", "loopback"),  # how a resolver reads 127.0.0.1 too
        ("http://0x7f000001:9001", "loopback"),
        ("http://2130706433:9001", "loopback"),
        ("http://[::1]:9001", "loopback"),
        ("http://[::ffff:127.0.0.1]:9001", "loopback"),
        ("http://localhost:9001", "this machine"),
        ("http://api.localhost:9001", "this machine"),
    ],
)
def test_loopback_and_link_local_hosts_are_refused_in_the_cloud(text: str, reason: str) -> None:
    with pytest.raises(SourceHostNotAllowed, match=reason) as caught:
        base_url(text)
    assert caught.value.error_name == "SourceHostNotAllowed"


def test_the_embedded_stack_reaches_loopback_but_never_link_local() -> None:
    assert base_url("http://127.0.0.1:9001", EMBEDDED, carries_key=True) == "http://127.0.0.1:9001"
    with pytest.raises(SourceHostNotAllowed, match="link-local"):
        base_url("http://169.254.169.254", EMBEDDED)


def test_an_api_key_goes_only_over_https_except_to_the_embedded_stacks_loopback() -> None:
    with pytest.raises(InvalidConnection, match="clear text; use https://"):
        base_url("http://api.vendor.example", carries_key=True)
    assert base_url("https://api.vendor.example", carries_key=True)
    assert base_url("http://api.vendor.example", carries_key=False)


def test_the_connector_parses_its_base_url(access: SourceAccess) -> None:
    # The schema's pattern lets the issue's base_url through; the parsed check is the rule.
    connection = parse_connection(
        SOURCE, "http_api", {"base_url": "http://host/internal/admin?all=1#", "dataset": "d"}
    )
    with pytest.raises(InvalidConnection, match="has a query or a fragment"):
        access.connector(SOURCE, "http_api", connection)


# --- postgres: libpq settings --------------------------------------------------------------------

PG = {
    "password_secret": source_secret(SOURCE, "db"),
    "table": "listings",
    "last_modified_column": "updated_at",
    "sold_date_column": "sold_at",
}


def libpq(connection: dict[str, Any], rule: HostRule = CLOUD) -> dict[str, str]:
    return parse_libpq_settings(SOURCE, {**PG, **connection}, rule)


@pytest.mark.parametrize(
    ("dsn", "key"),
    [
        ("postgresql://u@h/d?pass%77ord=hunter2", "password"),  # the issue's
        ("postgresql://u:hunter2@h/d", "password"),
        ("host=h dbname=d user=u password=hunter2", "password"),
        ("host=h dbname=d user=u passfile=/tmp/pgpass", "passfile"),
        ("postgresql://u@h/d?passfile=/tmp/pgpass", "passfile"),
    ],
)
def test_a_dsn_that_carries_a_password_is_refused_as_libpq_reads_it(dsn: str, key: str) -> None:
    with pytest.raises(InvalidConnection, match=f"connection.dsn sets {key}: the password") as e:
        libpq({"dsn": dsn})
    assert "hunter2" not in str(e.value)


@pytest.mark.parametrize(
    ("dsn", "key"),
    [
        ("postgresql://u@h/d?options=-c%20default_transaction_read_only%3Doff", "options"),
        ("postgresql://u@h/d?service=partner", "service"),
        ("host=h dbname=d user=u hostaddr=127.0.0.1", "hostaddr"),
        ("host=h dbname=d user=u require_auth=password", "require_auth"),
        ("host=h dbname=d user=u sslkey=/var/task/key.pem", "sslkey"),
    ],
)
def test_a_dsn_may_set_only_where_and_as_whom_to_connect(dsn: str, key: str) -> None:
    with pytest.raises(InvalidConnection, match=f"sets {key}, which a source may not set"):
        libpq({"dsn": dsn})


def test_a_dsn_libpq_cannot_read_is_refused_without_repeating_it() -> None:
    with pytest.raises(InvalidConnection, match="not a connection string or URI") as caught:
        libpq({"dsn": "host=h password='hunter2"})
    assert "hunter2" not in str(caught.value)


def test_the_schema_lets_the_issues_dsn_through_and_the_connector_refuses_it(
    access: SourceAccess,
) -> None:
    connection = parse_connection(
        SOURCE, "postgres", {**PG, "dsn": "postgresql://u@h/d?pass%77ord=hunter2"}
    )
    with pytest.raises(InvalidConnection, match=r"connection\.dsn sets password"):
        access.connector(SOURCE, "postgres", connection)


@pytest.mark.parametrize(
    ("connection", "says"),
    [
        ({"dsn": "postgresql://u@/d"}, "this machine"),  # libpq's default Unix socket
        ({"dsn": "postgresql://u@/d?host=/tmp"}, "this machine"),
        ({"dsn": "postgresql://u@127.0.0.1/d"}, "loopback"),
        ({"dsn": "postgresql://u@169.254.169.254/d"}, "link-local"),
        ({"dsn": "postgresql://u@a,b/d"}, "several hosts"),
        ({"host": "localhost", "dbname": "d", "user": "u"}, "this machine"),
    ],
)
def test_a_postgres_host_on_this_machine_is_refused_in_the_cloud(
    connection: dict[str, Any], says: str
) -> None:
    with pytest.raises((SourceHostNotAllowed, InvalidConnection), match=says):
        libpq(connection)


def test_the_embedded_stacks_unix_socket_is_allowed_there() -> None:
    assert libpq({"dsn": "postgresql://u@/d?host=/tmp/pg"}, EMBEDDED) == {
        "user": "u",
        "dbname": "d",
        "host": "/tmp/pg",
    }


def test_a_name_is_pinned_to_its_checked_address() -> None:
    def resolve(host: str, port: str, *, type: int) -> list[tuple[Any, ...]]:
        return [
            (10, type, 6, "", ("2001:db8::5", 5432, 0, 0)),
            (2, type, 6, "", ("192.0.2.5", 5432)),
        ]

    settings = {"host": "db.example", "dbname": "d"}
    assert pinned_address(SOURCE, settings, CLOUD, resolve) == "2001:db8::5"
    assert pinned_address(SOURCE, {"host": "192.0.2.9"}, CLOUD, resolve) is None  # as written


def test_a_name_with_any_loopback_address_is_refused() -> None:
    def resolve(host: str, port: str, *, type: int) -> list[tuple[Any, ...]]:
        return [(2, type, 6, "", ("192.0.2.5", 5432)), (2, type, 6, "", ("127.0.0.1", 5432))]

    with pytest.raises(SourceHostNotAllowed, match=r"127\.0\.0\.1, loopback"):
        pinned_address(SOURCE, {"host": "db.example"}, CLOUD, resolve)


def test_addresses_are_read_in_every_form_a_resolver_takes() -> None:
    assert ip_literal("127.1") == ipaddress.ip_address("127.0.0.1")
    assert ip_literal("[::1]") == ipaddress.ip_address("::1")
    assert ip_literal("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert ip_literal("db.example") is None
    assert ip_literal("deadbeef.example") is None


def test_the_embedded_access_is_built_from_one_setting() -> None:
    assert fake_access(allow_loopback=True).hosts == EMBEDDED
    assert fake_access().hosts == CLOUD

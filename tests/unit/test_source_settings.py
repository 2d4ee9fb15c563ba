"""A source's settings as people write them (shared/rules/source_settings.py): durations, the
contract, the rules the services read the row with, and the connection's own checks
(shared.connectors.SourceAccess.check_settings); each problem named by its field."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.migrate import MIGRATIONS_DIR
from shared.connectors.base import InvalidConnection, UnsupportedSourceType
from shared.connectors.endpoints import SourceHostNotAllowed
from shared.rules.flows import DEFAULT_LATENESS_ALLOWANCE
from shared.rules.freshness import MAX_OVERDUE_AFTER_PERIODS, MIN_OVERDUE_AFTER_PERIODS
from shared.rules.source_settings import (
    DEFAULT_BACKDATE_DAYS,
    SETTINGS_CONTRACT,
    InvalidSourceSettings,
    differences,
    entry_of,
    format_duration,
    parse_duration,
    settings_from_entry,
)
from shared.runtime import contracts
from shared.runtime.catalogue import OVERDUE_AFTER_PERIODS
from shared.runtime.secrets import SecretNotAllowed
from tests.fakes.secrets import fake_access, source_secret


def an_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": "acme",
        "type": "http_api",
        "connection": {"base_url": "https://api.acme.example", "dataset": "listings"},
    }
    entry.update(changes)
    return {key: value for key, value in entry.items() if value is not None}


# -- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(minutes=90)),
        ("2 days", timedelta(days=2)),
        ("10 minutes", timedelta(minutes=10)),
        ("0s", timedelta(0)),
        ("1w", timedelta(weeks=1)),
    ],
)
def test_a_duration_is_whole_numbers_with_units(text: str, length: timedelta) -> None:
    assert parse_duration(text) == length


@pytest.mark.parametrize("text", ["", "15", "1.5h", "-3m", "every 5 min", "15x", "m15"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|unit"):
        parse_duration(text)


def test_a_duration_too_long_for_a_timedelta_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("999999999w")


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10_000)))
def test_a_written_duration_reads_back_equal(length: timedelta) -> None:
    assert parse_duration(format_duration(length)) == length


def test_a_duration_is_written_in_its_largest_whole_unit() -> None:
    assert [format_duration(timedelta(minutes=m)) for m in (0, 10, 90, 120, 1440)] == [
        "0s",
        "10m",
        "90m",
        "2h",
        "1d",
    ]


# -- the contract and the rules ----------------------------------------------------------------


def test_a_minimal_entry_takes_the_defaults() -> None:
    settings = settings_from_entry(an_entry())
    assert (settings.name, settings.backdate_days, settings.lateness_allowance) == (
        "acme",
        DEFAULT_BACKDATE_DAYS,
        DEFAULT_LATENESS_ALLOWANCE,
    )
    assert settings.schedule_cron is None and settings.schedule_interval is None
    assert settings.overdue_after_periods == OVERDUE_AFTER_PERIODS


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"schedule_cron": "every 5 min"}, "schedule_cron: 'every 5 min' is not a valid"),
        ({"schedule_cron": "0 0 31 4 *"}, "never comes"),
        ({"schedule_cron": "*/5 * * * *", "schedule_interval": "5m"}, "cannot both be present"),
        ({"schedule_interval": "5 min please"}, "schedule_interval: '5 min please'"),
        ({"schedule_interval": "30s"}, "under a minute"),
        ({"lateness_allowance": "2d"}, "lateness_allowance = 2 days"),
        ({"lateness_allowance": 600}, "lateness_allowance: 600 is not of type 'string'"),
        ({"backdate_days": 0}, "backdate_days: 0 is less than the minimum of 1"),
        ({"backdate": 30}, "'backdate' was unexpected"),
        ({"id": "acme listings"}, "id: 'acme listings' does not match"),
        ({"connection": "https://api.acme.example"}, "connection: 'https://api.acme.example'"),
        ({"name": ""}, "name"),
        ({"overdue_after_periods": 1}, "overdue_after_periods: 1 is less than or equal to"),
        ({"overdue_after_periods": "2"}, "overdue_after_periods: '2' is not of type 'number'"),
        ({"overdue_after_periods": float("nan")}, "overdue_after_periods = nan is not valid"),
    ],
)
def test_each_problem_is_named_by_its_field(changes: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidSourceSettings) as refused:
        settings_from_entry(an_entry(**changes))
    message = str(refused.value)
    assert names in message
    assert "\n" not in message


def test_the_rules_speak_of_the_setting_not_of_the_column() -> None:
    with pytest.raises(InvalidSourceSettings) as refused:
        settings_from_entry(an_entry(lateness_allowance="2d"))
    assert "fix lateness_allowance" in str(refused.value)
    assert "public.source" not in str(refused.value)


def test_a_connection_over_the_rows_bound_is_refused_before_the_database_is() -> None:
    huge = {"base_url": "https://api.acme.example", "dataset": "x" * 70_000}
    with pytest.raises(InvalidSourceSettings, match="over 65536 bytes"):
        settings_from_entry(an_entry(connection=huge))


def test_the_defaults_and_the_id_are_the_tables() -> None:
    first = (MIGRATIONS_DIR / "0001_source_runs_history.sql").read_text()
    assert f"backdate_days          integer NOT NULL DEFAULT {DEFAULT_BACKDATE_DAYS} " in first
    # The overdue periods: the table's default and bounds, the contract's and the rule's
    freshness = (MIGRATIONS_DIR / "0019_freshness.sql").read_text()
    low, high = MIN_OVERDUE_AFTER_PERIODS, MAX_OVERDUE_AFTER_PERIODS
    assert (
        f"overdue_after_periods double precision NOT NULL DEFAULT {OVERDUE_AFTER_PERIODS:g}\n"
        f"        CHECK (overdue_after_periods > {low:g} AND overdue_after_periods <= {high:g})"
        in freshness
    )
    periods = contracts.schema_of(SETTINGS_CONTRACT)["properties"]["overdue_after_periods"]
    assert (periods["exclusiveMinimum"], periods["maximum"]) == (low, high)
    table_id = re.search(r"source_id ~ '([^']+)'", first)
    assert table_id is not None
    schema = contracts.schema_of(SETTINGS_CONTRACT)
    assert schema["properties"]["id"]["pattern"] == table_id.group(1)


def test_differences_name_each_column_changed() -> None:
    before = settings_from_entry(an_entry(schedule_interval="15m"))
    after = settings_from_entry(an_entry(schedule_cron="*/5 * * * *", backdate_days=7))
    assert differences(before, after) == {
        "backdate_days": (30, 7),
        "schedule_interval": (timedelta(minutes=15), None),
        "schedule_cron": (None, "*/5 * * * *"),
    }
    assert differences(before, before) == {}


def test_an_entry_written_back_reads_equal() -> None:
    settings = settings_from_entry(
        an_entry(
            name="ACME",
            schedule_cron="0 6 * * 1-5",
            lateness_allowance="0s",
            overdue_after_periods=1.5,
        )
    )
    assert settings_from_entry(entry_of(settings)) == settings


# -- the connection: its schema, its connector's checks, its secrets ----------------------------

ACCESS = fake_access()


@pytest.mark.parametrize(
    ("source_type", "connection", "error", "names"),
    [
        (
            "http_api",
            {"base_url": "https://api.acme.example", "datset": "x"},
            InvalidConnection,
            "'datset' was unexpected",
        ),
        ("ftp", {}, UnsupportedSourceType, "'ftp' is not supported"),
        (
            "http_api",
            {"base_url": "https://api.acme.example/x?all=1", "dataset": "x"},
            InvalidConnection,
            "base_url",
        ),
        (
            "http_api",
            {"base_url": "http://169.254.169.254", "dataset": "x"},
            SourceHostNotAllowed,
            "link-local",
        ),
        (
            "http_api",
            {"base_url": "http://127.0.0.1:8080", "dataset": "x"},
            SourceHostNotAllowed,
            "loopback",
        ),
        (
            "http_api",
            {
                "base_url": "https://api.acme.example",
                "dataset": "x",
                "api_key_secret": source_secret("globex", "api-key"),
            },
            SecretNotAllowed,
            "connection.api_key_secret",
        ),
        (
            "postgres",
            {
                "dsn": "host=db.example dbname=d user=u passfile=/etc/x",
                "password_secret": source_secret("acme", "db"),
                "table": "t",
                "last_modified_column": "m",
                "sold_date_column": "s",
            },
            InvalidConnection,
            "passfile",
        ),
    ],
    ids=[
        "typo",
        "unknown-type",
        "url-with-query",
        "metadata",
        "loopback-in-the-cloud",
        "another-sources-secret",
        "dsn-passfile",
    ],
)
def test_a_connection_is_checked_as_the_services_will_before_it_is_stored(
    source_type: str, connection: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=re.escape(names)):
        ACCESS.check_settings("acme", source_type, connection)


def test_a_connection_that_passes_reads_no_secret() -> None:
    connection = {
        "base_url": "https://api.acme.example",
        "dataset": "x",
        "api_key_secret": source_secret("acme", "api-key"),
    }
    ACCESS.check_settings("acme", "http_api", connection)
    assert ACCESS.secrets._client.calls == []

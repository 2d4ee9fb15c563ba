"""A person's changes of sources without SQL (ops/source_changes.py, ops/sources_file.py) on a
real PostgreSQL, as their own login: checked before anything is stored, recorded with who and
why by the database, a deleted source's history kept, a run's source left alone, and a sources
file applied whole or not at all, once."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest
import yaml
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from infra.grants import apply_grants
from infra.migrate import apply_migrations
from local.pg import create_warehouse_tables, transaction
from ops.config import OperatorError
from ops.source_changes import (
    add_source,
    delete_source,
    disable_source,
    edit_source,
    enable_source,
)
from ops.sources import sources_list
from ops.sources_file import (
    DROPPED_REASON,
    InvalidSourcesFile,
    Plan,
    apply_file,
    checked_entries,
    export_sources,
    read_entries,
)
from services.scheduler.service import enable_due
from shared.connectors.base import InvalidConnection
from shared.rules.source_settings import InvalidSourceSettings
from shared.runtime.secrets import SecretNotAllowed
from shared.store.db import Database
from tests.fakes.secrets import fake_access, source_secret
from tests.integration.conftest import RESPECS_TABLES, source_row_text

ALICE, BOB = "it_alice", "it_bob"
ACCESS = fake_access(allow_loopback=True)
NOW = datetime.now(UTC)
People = dict[str, Database]


def new_id() -> str:
    return f"sc-{uuid.uuid4().hex[:12]}"


def an_entry(source_id: str, **changes: Any) -> dict[str, Any]:
    entry = {
        "id": source_id,
        "type": "http_api",
        "connection": {"base_url": "http://127.0.0.1:9", "dataset": "listings"},
    }
    entry.update(changes)
    return {key: value for key, value in entry.items() if value is not None}


def row_of(db: Database, source_id: str) -> dict[str, Any]:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM public.source WHERE source_id = %s", (source_id,))
        return dict(cur.fetchone())


def changes_of(db: Database, source_id: str) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute(
            "SELECT * FROM public.source_change WHERE source_id = %s ORDER BY change_id",
            (source_id,),
        )
        return [dict(row) for row in cur.fetchall()]


def hold(db: Database, source_id: str, execution: str = "arn:x:execution:sm:run-1") -> None:
    """A run holds the source's lock for the next quarter of an hour."""
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET locked_by = %s, locked_at = now(),"
            " lock_expires_at = now() + interval '15 minutes' WHERE source_id = %s",
            (execution, source_id),
        )


def add(person: Database, source_id: str, **changes: Any) -> dict[str, Any]:
    return add_source(person, an_entry(source_id, **changes), access=ACCESS, reason="onboarding")


# -- add ---------------------------------------------------------------------------------------


def test_a_person_adds_a_source_and_the_database_records_who_and_why(
    db: Database, people: People
) -> None:
    source_id = new_id()
    added = add(
        people[ALICE],
        source_id,
        schedule_interval="15m",
        lateness_allowance="30m",
        overdue_after_periods=3,
    )
    assert added["changed_by"] == ALICE
    row = row_of(db, source_id)
    assert row["schedule_interval"] == timedelta(minutes=15)
    assert row["lateness_allowance"] == timedelta(minutes=30)
    assert row["overdue_after_periods"] == 3
    assert (row["name"], row["backdate_days"], row["is_active"]) == (source_id, 30, True)
    [change] = changes_of(db, source_id)
    assert (change["action"], change["changed_by"], change["reason"]) == (
        "added",
        ALICE,
        "onboarding",
    )
    assert change["changes"]["schedule_interval"] == {"from": None, "to": "00:15:00"}
    assert change["changes"]["overdue_after_periods"] == {"from": None, "to": 3}


@pytest.mark.parametrize(
    ("changes", "error", "names"),
    [
        # the typo: stored, then failing only at the first run
        (
            {"connection": {"base_url": "http://127.0.0.1:9", "datset": "x"}},
            InvalidConnection,
            "'datset' was unexpected",
        ),
        ({"schedule_cron": "every 5 min"}, InvalidSourceSettings, "schedule_cron"),
        ({"schedule_cron": "0 0 30 2 *"}, InvalidSourceSettings, "never comes"),
        ({"schedule_interval": "30s"}, InvalidSourceSettings, "under a minute"),
        ({"lateness_allowance": "2d"}, InvalidSourceSettings, "lateness_allowance"),
        ({"backdate_days": 0}, InvalidSourceSettings, "backdate_days"),
        ({"type": "ftp"}, Exception, "'ftp' is not supported"),
        (
            {"connection": {"base_url": "http://169.254.169.254", "dataset": "x"}},
            Exception,
            "link-local",
        ),
        (
            {
                "connection": {
                    "base_url": "http://127.0.0.1:9",
                    "dataset": "x",
                    "api_key_secret": source_secret("someone-else", "api-key"),
                }
            },
            SecretNotAllowed,
            "not one of the source's secrets",
        ),
    ],
    ids=[
        "typo-in-connection",
        "cron-in-words",
        "cron-never-comes",
        "interval-under-a-minute",
        "lateness-over-a-day",
        "backdate-zero",
        "unknown-type",
        "metadata-host",
        "another-sources-secret",
    ],
)
def test_a_bad_source_is_refused_by_name_and_nothing_is_stored(
    db: Database, people: People, changes: dict[str, Any], error: type[Exception], names: str
) -> None:
    source_id = new_id()
    with pytest.raises(error, match=names):
        add(people[ALICE], source_id, **changes)
    assert source_row_text(db, source_id) is None
    assert changes_of(db, source_id) == []


def test_an_id_taken_is_refused_whether_its_source_is_deleted_or_not(people: People) -> None:
    source_id = new_id()
    add(people[ALICE], source_id)
    with pytest.raises(OperatorError, match="already exists; change it with"):
        add(people[BOB], source_id)
    delete_source(people[ALICE], source_id, reason="gone", now=NOW, backfills=[])
    with pytest.raises(OperatorError, match="id stays with its history"):
        add(people[BOB], source_id)


# -- edit and schedule -------------------------------------------------------------------------


def test_an_edit_changes_only_what_is_given_and_is_checked_whole(
    db: Database, people: People
) -> None:
    source_id = new_id()
    add(people[ALICE], source_id, schedule_interval="15m", backdate_days=7)
    edited = edit_source(
        people[BOB],
        source_id,
        {"schedule_cron": "*/5 * * * *", "schedule_interval": None},
        access=ACCESS,
        reason="vendor refreshes every 5 minutes",
        now=NOW,
    )
    assert edited["changes"] == {
        "schedule_interval": {"from": "15m", "to": None},
        "schedule_cron": {"from": None, "to": "*/5 * * * *"},
    }
    row = row_of(db, source_id)
    assert (row["schedule_cron"], row["schedule_interval"], row["backdate_days"]) == (
        "*/5 * * * *",
        None,
        7,
    )
    change = changes_of(db, source_id)[-1]
    assert (change["action"], change["changed_by"]) == ("edited", BOB)
    # The periods after which it is overdue are a setting like the others
    edited = edit_source(
        people[BOB],
        source_id,
        {"overdue_after_periods": 4},
        access=ACCESS,
        reason="the vendor is slow on Mondays",
        now=NOW,
    )
    assert edited["changes"] == {"overdue_after_periods": {"from": 2.0, "to": 4}}
    assert changes_of(db, source_id)[-1]["changes"] == {
        "overdue_after_periods": {"from": 2, "to": 4}
    }

    before = source_row_text(db, source_id)
    with pytest.raises(InvalidConnection, match="dataset"):
        edit_source(
            people[BOB],
            source_id,
            {"connection": {"base_url": "http://127.0.0.1:9"}},
            access=ACCESS,
            reason="x",
            now=NOW,
        )
    assert source_row_text(db, source_id) == before
    same = edit_source(
        people[BOB], source_id, {"backdate_days": 7}, access=ACCESS, reason="x", now=NOW
    )
    assert same["action"] == "unchanged" and source_row_text(db, source_id) == before


def test_a_run_holding_the_source_keeps_its_connection(db: Database, people: People) -> None:
    source_id = new_id()
    add(people[ALICE], source_id)
    hold(db, source_id)
    moved = {"base_url": "http://127.0.0.1:9", "dataset": "other"}
    with pytest.raises(OperatorError, match="held by run run-1"):
        edit_source(
            people[ALICE], source_id, {"connection": moved}, access=ACCESS, reason="x", now=NOW
        )
    # What a run does not read may change under it
    edit_source(people[ALICE], source_id, {"name": "renamed"}, access=ACCESS, reason="x", now=NOW)
    assert row_of(db, source_id)["name"] == "renamed"


# -- disable, enable, delete -------------------------------------------------------------------


def test_a_source_disabled_until_a_time_is_enabled_by_the_scheduler_after_it(
    db: Database, people: People
) -> None:
    source_id = new_id()
    add(people[ALICE], source_id)
    disable_source(
        people[ALICE], source_id, reason="vendor outage", until=NOW + timedelta(hours=1), now=NOW
    )
    assert enable_due(db=db) == [] or source_id not in enable_due(db=db)
    [listed] = [row for row in sources_list(db) if row["source_id"] == source_id]
    assert listed["is_active"] is False
    assert listed["disabled"].startswith("vendor outage until ")

    # When the time passes
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET disabled_until = now() - interval '1 second'"
            " WHERE source_id = %s",
            (source_id,),
        )
    assert source_id in enable_due(db=db)
    row = row_of(db, source_id)
    assert (row["is_active"], row["disabled_reason"], row["disabled_until"]) == (True, None, None)
    change = changes_of(db, source_id)[-1]
    assert change["action"] == "enabled"
    assert change["reason"].startswith("enabled by the scheduler: disabled until ")


def test_enable_ends_a_pause_and_says_when_there_was_none(db: Database, people: People) -> None:
    source_id = new_id()
    add(people[ALICE], source_id)
    assert enable_source(people[BOB], source_id, reason="x")["action"] == "unchanged"
    disable_source(people[ALICE], source_id, reason="outage", until=None, now=NOW)
    enabled = enable_source(people[BOB], source_id, reason="vendor back")
    assert (enabled["action"], enabled["was_disabled_for"]) == ("enabled", "outage")
    assert [c["action"] for c in changes_of(db, source_id)] == ["added", "disabled", "enabled"]


def test_delete_is_refused_while_a_run_holds_the_source_and_keeps_the_history(
    db: Database, people: People
) -> None:
    source_id = new_id()
    add(people[ALICE], source_id)
    hold(db, source_id)
    with pytest.raises(OperatorError, match="to delete it, wait for the run"):
        delete_source(people[ALICE], source_id, reason="gone", now=NOW, backfills=[])
    assert row_of(db, source_id)["deleted_at"] is None
    with pytest.raises(OperatorError, match="unfinished backfill"):
        delete_source(
            people[ALICE],
            source_id,
            reason="gone",
            now=NOW,
            backfills=[{"backfill_id": 7, "state": "running"}],
        )

    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET locked_by = NULL, locked_at = NULL, lock_expires_at = NULL"
            " WHERE source_id = %s",
            (source_id,),
        )
    delete_source(people[BOB], source_id, reason="vendor contract ended", now=NOW, backfills=[])
    row = row_of(db, source_id)
    assert row["deleted_at"] is not None and row["is_active"] is False
    assert source_id not in {r["source_id"] for r in sources_list(db)}
    assert source_id in {r["source_id"] for r in sources_list(db, deleted=True)}
    change = changes_of(db, source_id)[-1]
    assert (change["action"], change["changed_by"], change["reason"]) == (
        "deleted",
        BOB,
        "vendor contract ended",
    )
    with pytest.raises(OperatorError, match="was deleted"):
        enable_source(people[ALICE], source_id, reason="x")


def test_a_change_by_hand_is_recorded_too(db: Database, people: People) -> None:
    source_id = new_id()
    add(people[ALICE], source_id)
    with people[BOB].transaction() as cur:
        cur.execute("UPDATE public.source SET backdate_days = 3 WHERE source_id = %s", (source_id,))
    change = changes_of(db, source_id)[-1]
    assert (change["changed_by"], change["reason"]) == (BOB, "changed directly (by hand)")
    assert change["changes"] == {"backdate_days": {"from": 30, "to": 3}}


# -- a sources file ----------------------------------------------------------------------------
# apply makes every registered source match the file: these tests have a database of their own.


@pytest.fixture(scope="module")
def own_url(migrated_url: str) -> Iterator[str]:
    name = f"it_sources_file_{os.getpid()}"
    admin = psycopg2.connect(migrated_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_dsn(migrated_url, dbname=name)
    apply_migrations(url)
    create_warehouse_tables(url)
    with transaction(url) as cur:
        apply_grants(cur, RESPECS_TABLES)
    yield url
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()


@pytest.fixture
def own(own_url: str, person_urls: dict[str, str]) -> Iterator[tuple[Database, People]]:
    """The database of this module, emptied, and each person's connection to it."""
    admin = Database(own_url, application_name="it-sources-file")
    with admin.transaction() as cur:
        cur.execute("TRUNCATE public.source CASCADE")
    name = parse_dsn(own_url)["dbname"]
    them = {
        person: Database(make_dsn(url, dbname=name), application_name=person)
        for person, url in person_urls.items()
    }
    yield admin, them
    for database in (admin, *them.values()):
        database.close()


def apply(person: Database, text: str, *, dry_run: bool = False) -> Plan:
    wanted = checked_entries(read_entries(text, "it.yaml"), "it.yaml", ACCESS)
    plan, _ = apply_file(person, wanted, origin="it.yaml", reason="it", dry_run=dry_run, now=NOW)
    return plan


def item(source_id: str, extra: str = "") -> str:
    return (
        f"  - id: {source_id}\n    type: http_api\n"
        f"    connection: {{base_url: 'http://127.0.0.1:9', dataset: listings}}\n{extra}"
    )


def planned(plan: Plan) -> list[tuple[str, str]]:
    return [(change.source_id, change.action.value) for change in plan.changes]


def test_apply_adds_changes_and_disables_what_the_file_drops_then_changes_nothing(
    own: tuple[Database, People],
) -> None:
    db, them = own
    kept, dropped, added = "kept", "dropped", "added"
    add(them[ALICE], kept)
    add(them[ALICE], dropped)
    text = "sources:\n" + item(kept, "    schedule_interval: 1h\n") + item(added)

    dry = apply(them[BOB], text, dry_run=True)
    assert planned(dry) == [(kept, "change"), (added, "add"), (dropped, "disable")]
    assert source_row_text(db, added) is None

    assert planned(apply(them[BOB], text)) == planned(dry)
    assert row_of(db, kept)["schedule_interval"] == timedelta(hours=1)
    assert row_of(db, added)["is_active"] is True
    assert (row_of(db, dropped)["is_active"], row_of(db, dropped)["disabled_reason"]) == (
        False,
        DROPPED_REASON,
    )
    assert [(c["action"], c["changed_by"]) for c in changes_of(db, added)] == [("added", BOB)]

    # Applied again: nothing to do
    assert planned(apply(them[BOB], text)) == []
    # Listed again, the source it dropped is enabled again
    assert planned(apply(them[BOB], text + item(dropped))) == [(dropped, "enable")]
    assert row_of(db, dropped)["is_active"] is True


def test_an_invalid_file_is_refused_whole_with_every_problem(own: tuple[Database, People]) -> None:
    db, them = own
    add(them[ALICE], "kept")
    text = (
        "sources:\n"
        + item("good")
        + "  - id: bad\n    type: http_api\n    connection: {base_url: 'http://127.0.0.1:9'}\n"
        + item("good")
    )
    with pytest.raises(InvalidSourcesFile) as refused:
        apply(them[ALICE], text)
    problems = refused.value.problems
    assert any(p.startswith("sources[1]: ") and "dataset" in p for p in problems), problems
    assert "good: listed more than once" in problems
    assert source_row_text(db, "good") is None and source_row_text(db, "bad") is None
    assert row_of(db, "kept")["is_active"] is True


def test_apply_leaves_a_persons_pause_refuses_a_deleted_id_and_a_held_connection(
    own: tuple[Database, People],
) -> None:
    db, them = own
    for source_id in ("paused", "deleted", "held"):
        add(them[ALICE], source_id)
    disable_source(them[ALICE], "paused", reason="outage", until=None, now=NOW)
    delete_source(them[ALICE], "deleted", reason="gone", now=NOW, backfills=[])
    hold(db, "held")
    with pytest.raises(InvalidSourcesFile, match="a deleted source holds this id"):
        apply(them[BOB], "sources:\n" + item("deleted"), dry_run=True)
    plan = apply(them[BOB], "sources:\n" + item("paused") + item("held"), dry_run=True)
    assert planned(plan) == []
    assert plan.notes[0].startswith("paused stays disabled (outage)")
    with pytest.raises(InvalidSourcesFile, match="held: run run-1 holds it"):
        apply(
            them[BOB],
            "sources:\n" + item("paused") + item("held").replace("listings", "other"),
        )


def test_export_then_apply_changes_nothing(own: tuple[Database, People]) -> None:
    db, them = own
    add(
        them[ALICE],
        "acme",
        name="ACME: listings",
        schedule_cron="*/15 * * * *",
        lateness_allowance="0s",
        overdue_after_periods=1.5,
        backdate_days=90,
    )
    for source_id in ("paused", "dropped", "deleted"):
        add(them[ALICE], source_id)
    disable_source(them[ALICE], "paused", reason="outage", until=None, now=NOW)
    delete_source(them[ALICE], "deleted", reason="gone", now=NOW, backfills=[])
    # (an apply whose file does not list "dropped")
    listed = [e for e in read_entries(export_sources(db), "export") if e["id"] != "dropped"]
    assert planned(apply(them[BOB], yaml.safe_dump({"sources": listed}))) == [
        ("dropped", "disable")
    ]

    exported = export_sources(db)
    assert [e["id"] for e in read_entries(exported, "export")] == ["acme", "paused"]
    assert "schedule_cron: '*/15 * * * *'" in exported and "lateness_allowance: 0s" in exported
    assert "overdue_after_periods: 1.5" in exported
    assert planned(apply(them[BOB], exported)) == []

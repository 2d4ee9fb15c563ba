"""A real PostgreSQL for the integration tier, factories for sources and executions, and the
services called as their handlers call them (fakes and builders: tests/fakes, tests/builders).

The database is an embedded pgserver in a temporary directory, or `DATABASE_URL` when it is
set; either way the project's migrations are applied once per session. Every test registers
sources with unique ids, so tests share the database without seeing each other's rows.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from psycopg2.extensions import make_dsn

from infra.grants import add_person, apply_grants
from infra.migrate import MIGRATIONS_DIR, apply_migrations
from local.pg import create_warehouse_tables, require_passwords, transaction
from services.download.domain import Claim, Heartbeat
from services.download.service import download_run
from services.scheduler.domain import Admission
from services.validation.service import validate_run
from shared.runtime.settings import RespecsSettings
from shared.store.db import Database
from shared.store.sources import SourceSpec, get_run, get_source, register_source
from tests.builders import Execution
from tests.fakes import FakeConnectionCheck, FakeConnector, FakeSink, quiet_heartbeat

LEASE = timedelta(minutes=15)
# The scheduler's admission with room for every run: the shared database holds other tests'
# runs under way (tests/integration/test_admission.py proves the limit, in a database of its own).
ROOM_FOR_EVERY_RUN = Admission(capacity=1_000_000, validation_bound=timedelta(minutes=4))
RESPECS_TABLES = frozenset({"public.listing_attributes"})
RESPECS = RespecsSettings(allowed_tables=RESPECS_TABLES, statement_timeout_ms=5_000)
# A cursor safely in the past, so every Normal window starts at it.
CURSOR = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


# -- the database ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); harmless here.
        warnings.simplefilter("ignore")
        import pgserver

        state_dir = tmp_path_factory.mktemp("embedded")
        server = pgserver.get_server(state_dir / "pgdata", cleanup_mode="stop")
    try:
        yield require_passwords(server, state_dir)
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def migrated_url(database_url: str) -> str:
    """Migrated, with the demo warehouse's tables and every role's privileges applied."""
    apply_migrations(database_url)
    create_warehouse_tables(database_url)
    with transaction(database_url) as cur:
        apply_grants(cur, RESPECS_TABLES)
    return database_url


# -- people -----------------------------------------------------------------------------------

PEOPLE = ("it_alice", "it_bob", "it_carol")


@pytest.fixture(scope="session")
def person_urls(migrated_url: str) -> dict[str, str]:
    """Each person's own login (a member of the operators' group), as a URL."""
    passwords = {person: uuid.uuid4().hex for person in PEOPLE}
    with transaction(migrated_url) as cur:
        for person, password in passwords.items():
            add_person(cur, person, password=password)
    return {
        person: make_dsn(migrated_url, user=person, password=password)
        for person, password in passwords.items()
    }


@pytest.fixture(scope="session")
def people(person_urls: dict[str, str]) -> Iterator[dict[str, Database]]:
    """A database connection per person, each as their own login: what they do is recorded as
    that login."""
    connections = {
        person: Database(url, application_name=f"sourceflow-integration-{person}")
        for person, url in person_urls.items()
    }
    yield connections
    for connection in connections.values():
        connection.close()


@pytest.fixture(scope="session")
def db(migrated_url: str) -> Iterator[Database]:
    database = Database(migrated_url, application_name="sourceflow-integration")
    yield database
    database.close()


def source_row_text(db: Database, source_id: str) -> str | None:
    """The source row exactly as PostgreSQL renders it: equal text means nothing changed."""
    with db.transaction() as cur:
        cur.execute("SELECT s::text AS row FROM public.source s WHERE source_id = %s", (source_id,))
        row = cur.fetchone()
    return row["row"] if row else None


def run_row(db: Database, execution_arn: str) -> dict[str, Any] | None:
    return get_run(db, execution_arn)


def runs_of(db: Database, source_id: str) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute(
            "SELECT * FROM public.source_run WHERE source_id = %s ORDER BY started_at",
            (source_id,),
        )
        return [dict(row) for row in cur.fetchall()]


def flow_history_of(db: Database, source_id: str) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute(
            "SELECT * FROM public.source_flow_history WHERE source_id = %s ORDER BY change_id",
            (source_id,),
        )
        return [dict(row) for row in cur.fetchall()]


def expire_lease(db: Database, source_id: str) -> None:
    """The holder stopped renewing: its lease ran out a minute ago."""
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET lock_expires_at = now() - interval '1 minute'"
            " WHERE source_id = %s AND locked_by IS NOT NULL",
            (source_id,),
        )
        assert cur.rowcount == 1, f"{source_id} is not locked"


# -- sources --------------------------------------------------------------------------------

MakeSource = Callable[..., str]


@pytest.fixture
def make_source(db: Database) -> MakeSource:
    """Register a source of its own for the test; returns its id."""

    def make(
        *,
        runtime_count: int = 1,
        cursor: datetime | None = None,
        params: Mapping[str, Any] | None = None,
        is_active: bool = True,
        source_type: str = "http_api",
        backdate_days: int = 30,
    ) -> str:
        source_id = f"it-{uuid.uuid4().hex[:16]}"
        register_source(
            db,
            SourceSpec(
                source_id=source_id,
                name=f"integration source {source_id}",
                source_type=source_type,
                connection={"base_url": "http://vendor.invalid", "dataset": source_id},
                backdate_days=backdate_days,
                batch_execution_params=params,
                is_active=is_active,
            ),
        )
        with db.transaction() as cur:
            cur.execute(
                "UPDATE public.source SET last_modified_date = %s, runtime_count = %s"
                " WHERE source_id = %s",
                (cursor, runtime_count, source_id),
            )
        assert get_source(db, source_id) is not None
        return source_id

    return make


# -- executions -----------------------------------------------------------------------------


NewExecution = Callable[[str], Execution]


@pytest.fixture
def new_execution() -> NewExecution:
    def new(source_id: str) -> Execution:
        return Execution(source_id, f"{source_id}-{uuid.uuid4().hex[:8]}")

    return new


# -- download's ports -----------------------------------------------------------------------


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


# -- calling the services as their handlers do -------------------------------------------


def clock() -> datetime:
    return datetime.now(UTC)


def validate(
    db: Database,
    execution: Execution,
    check: FakeConnectionCheck | None = None,
    *,
    approval_gate: bool = False,
) -> dict[str, Any]:
    return validate_run(
        execution.validation(),
        db=db,
        clock=clock,
        lease=LEASE,
        respecs_tables=RESPECS_TABLES,
        check_connection=check or FakeConnectionCheck(),
        approval_gate=approval_gate,
    )


def download(
    db: Database,
    execution: Execution,
    plan: Mapping[str, Any],
    connector: FakeConnector,
    sink: FakeSink,
    *,
    part_max_records: int = 1000,
    renew_lease: Callable[[], bool] | None = None,
    claim: Claim | None = None,
) -> dict[str, Any]:
    # With `renew_lease`, the heartbeat beats (and renews through it) on every record.
    heartbeat = (
        quiet_heartbeat()
        if renew_lease is None
        else Heartbeat(send=lambda: None, renew_lease=renew_lease, interval_seconds=0)
    )
    return download_run(
        execution.download(plan),
        db=db,
        connector_for=connector.factory(),
        sink=sink,
        heartbeat=heartbeat,
        part_max_records=part_max_records,
        claim=claim or new_claim(),
    )


def new_claim(message_id: str | None = None) -> Claim:
    """A delivery's claim; each call is a new attempt (of a new message unless one is named)."""
    return Claim(
        attempt=uuid.uuid4().hex,
        message_id=message_id or f"message-{uuid.uuid4().hex[:8]}",
        ttl=timedelta(minutes=1),
    )


def lock_of(db: Database, source_id: str) -> tuple[Any, Any, Any]:
    source = get_source(db, source_id)
    assert source is not None
    return source["locked_by"], source["locked_at"], source["lock_expires_at"]


def downloaded_run(
    db: Database, execution: Execution, records: list[dict[str, Any]], sink: FakeSink
) -> dict[str, Any]:
    """Given: the execution validated and downloaded `records`; returns the download result."""
    validated = validate(db, execution)
    assert validated["decision"] == "run", validated
    return download(db, execution, validated["plan"], FakeConnector(records), sink)


class RowHeld:
    """Holds one row (FOR UPDATE) in a separate session until the block exits. The block is
    given a function that waits until `n` sessions named `it-race-...` queue for it."""

    def __init__(self, dsn: str, table: str, column: str, key: str) -> None:
        self._dsn, self._table, self._column, self._key = dsn, table, column, key

    def __enter__(self) -> Callable[[int], None]:
        self._conn = psycopg2.connect(self._dsn)
        with self._conn.cursor() as cur:
            cur.execute(
                f"SELECT 1 FROM public.{self._table} WHERE {self._column} = %s FOR UPDATE",
                (self._key,),
            )
            assert cur.rowcount == 1
        return self._wait_for_waiters

    def _wait_for_waiters(self, n: int) -> None:
        deadline = time.monotonic() + 5
        probe = psycopg2.connect(self._dsn)
        probe.autocommit = True
        try:
            with probe.cursor() as cur:
                while time.monotonic() < deadline:
                    # The first waiter queues behind the holder, the next behind the first.
                    cur.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND cardinality(pg_blocking_pids(pid)) > 0"
                        "   AND application_name LIKE %s",
                        ("it-race-%",),
                    )
                    row = cur.fetchone()
                    if row is not None and row[0] >= n:
                        return
                    time.sleep(0.01)
        finally:
            probe.close()
        raise AssertionError(f"{n} sessions never queued behind {self._table} {self._key}")

    def __exit__(self, *_: object) -> None:
        self._conn.rollback()
        self._conn.close()


def race(
    dsn: str, table: str, column: str, key: str, calls: list[Callable[[Database], Any]]
) -> list[Any]:
    """Run `calls` at once, each in its own session, all released together once every one of
    them waits for the same row; returns what each returned or raised, in order."""
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        own = Database(dsn, application_name=f"it-race-{index}")
        try:
            results[index] = calls[index](own)
        except Exception as exc:
            results[index] = exc
        finally:
            own.close()

    with RowHeld(dsn, table, column, key) as waiting:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
        for thread in threads:
            thread.start()
        waiting(len(calls))
    for thread in threads:
        thread.join(timeout=10)
    return results


# -- migrations -----------------------------------------------------------------------------


@pytest.fixture
def empty_database_url(migrated_url: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own on the same server, dropped afterwards; when the server's role
    may not create databases, a private embedded PostgreSQL instead."""
    name = f"sourceflow_it_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(migrated_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            try:
                cur.execute(f'CREATE DATABASE "{name}"')
            except psycopg2.errors.InsufficientPrivilege:
                import pgserver

                private = pgserver.get_server(tmp_path / "pgdata", cleanup_mode="stop")
                try:
                    yield str(private.get_uri())
                finally:
                    private.cleanup()
                return
        yield make_dsn(migrated_url, dbname=name)
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    target.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        (target / path.name).write_bytes(path.read_bytes())
    return target

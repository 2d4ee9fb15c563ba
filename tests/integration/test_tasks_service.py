"""The tasks service against a real PostgreSQL: a sql task's query bound and bounded on its
target, each task recorded once in workflow_task_run whatever the duplicate deliveries, an
ingest task answered when its child run ends (once, whatever the duplicate events), and a
workflow run's end recorded and announced once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from local.roles import create_roles
from services.tasks.domain import TaskFailed
from services.tasks.service import (
    CHILD_CLAIM_WINDOW,
    Ports,
    do_task,
    failure_recorder,
    on_run_ended,
)
from shared.errors import DuplicateDelivery, TransientError
from shared.rules.workflows import WORKFLOW_TASK_ERROR
from shared.runtime.catalogue import DetailType
from shared.store.db import Database, fetch_one
from shared.store.workflows import add_version
from tests.fakes import FakeCallbacks
from tests.integration.conftest import RESPECS_TABLES, MakeSource

WORKFLOW = "it_campaign"


class Published:
    """The events, notifications and alerts the service sent, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Mapping[str, Any]]] = []
        self.notifications: list[tuple[str, str]] = []
        self.alerts: list[tuple[str, str]] = []

    def event(self, detail_type: str, fields: Mapping[str, Any], *_: Any, **__: Any) -> str:
        self.events.append((str(detail_type), fields))
        return f"event-{len(self.events)}-{uuid.uuid4().hex[:6]}"

    def notify(self, subject: str, message: str) -> str:
        self.notifications.append((subject, message))
        return f"message-{len(self.notifications)}"

    def alert(self, subject: str, message: str) -> str:
        self.alerts.append((subject, message))
        return f"alert-{len(self.alerts)}"


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def callbacks() -> FakeCallbacks:
    return FakeCallbacks()


@pytest.fixture(scope="module")
def tasks_db(migrated_url: str) -> Iterator[Database]:
    """The tasks service's own login: every test runs with the privileges it has."""
    database = Database(create_roles(migrated_url, RESPECS_TABLES)["tasks"])
    yield database
    database.close()


@pytest.fixture
def ports(
    tasks_db: Database, migrated_url: str, published: Published, callbacks: FakeCallbacks
) -> Ports:
    return Ports(
        db=tasks_db,
        publish_event=published.event,  # type: ignore[arg-type]
        callbacks=callbacks,
        notifications=published.notify,
        alerts=published.alert,
        sql_targets={"warehouse": migrated_url},
        sql_statement_timeout_ms=500,
    )


@pytest.fixture(scope="module")
def workflow_version(db: Database) -> int:
    """A version of the test's workflow (its definition is no matter to the tasks service)."""
    with db.transaction() as cur:
        cur.execute(
            "SELECT coalesce(max(version), 0) + 1 AS next FROM public.workflow_version"
            " WHERE workflow = %s",
            (WORKFLOW,),
        )
        version = int(cur.fetchone()["next"])
        add_version(cur, WORKFLOW, version, {"name": WORKFLOW}, f"hash-{version}", "arn:machine")
    return version


@pytest.fixture
def run_id(db: Database, workflow_version: int) -> str:
    """A workflow run as `sourceflow workflow run` records it before it starts."""
    run = f"{WORKFLOW}-v{workflow_version}-{uuid.uuid4().hex[:12]}"
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO public.workflow_run (id, workflow, version, execution_arn)"
            " VALUES (%s, %s, %s, %s)",
            (run, WORKFLOW, workflow_version, f"arn:execution:{run}"),
        )
    return run


def request(run_id: str, task: str, kind: str, spec: Mapping[str, Any], **variables: Any) -> dict:
    return {
        "schema": "workflow-task-request",
        "version": 1,
        "correlation_id": run_id,
        "produced_at": "2026-11-28T16:00:00Z",
        "task_token": f"token-{run_id}-{task}",
        "workflow": WORKFLOW,
        "workflow_version": 1,
        "workflow_run_id": run_id,
        "task": task,
        "kind": kind,
        "spec": dict(spec),
        "variables": variables,
    }


def task_row(db: Database, run_id: str, task: str) -> dict[str, Any] | None:
    with db.transaction() as cur:
        return fetch_one(
            cur,
            "SELECT * FROM public.workflow_task_run WHERE workflow_run_id = %s AND task = %s",
            (run_id, task),
        )


# -- sql ------------------------------------------------------------------------------------------


def test_a_sql_task_binds_its_variables_and_keeps_the_first_column_of_the_first_row(
    ports: Ports, db: Database, run_id: str
) -> None:
    hostile = "x'); DROP TABLE public.campaign; --"
    spec = {
        "target": "warehouse",
        "query": "SELECT length(%(name)s) * %(factor)s, 'ignored'",
        "into": "answer",
    }

    fields = do_task(request(run_id, "check", "sql", spec, name=hostile, factor=2), ports)

    assert fields == {
        "status": "succeeded",
        "variables": {"answer": 2 * len(hostile)},
        "detail": {"target": "warehouse", "row": True},
    }
    row = task_row(db, run_id, "check")
    assert row is not None
    assert (row["status"], row["kind"], row["variables_seen"]) == (
        "succeeded",
        "sql",
        {"name": hostile, "factor": 2},
    )


def test_a_sql_task_without_a_row_sets_its_variable_to_null(ports: Ports, run_id: str) -> None:
    spec = {"target": "warehouse", "query": "SELECT 1 WHERE false", "into": "campaign_id"}
    fields = do_task(request(run_id, "check", "sql", spec), ports)
    assert fields is not None and fields["variables"] == {"campaign_id": None}


def test_a_duplicate_delivery_runs_the_statement_once(
    ports: Ports, db: Database, run_id: str
) -> None:
    campaign_id = uuid.uuid4().int % 1_000_000_000
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO public.campaign (campaign_id, starts_on, ends_on, listings)"
            " VALUES (%s, current_date, current_date, 0)",
            (campaign_id,),
        )
    spec = {
        "target": "warehouse",
        "query": "UPDATE public.campaign SET listings = listings + 1"
        " WHERE campaign_id = %(campaign_id)s RETURNING listings",
        "into": "listings",
    }
    message = request(run_id, "count", "sql", spec, campaign_id=campaign_id)

    first, again = do_task(message, ports), do_task(message, ports)

    assert first == again
    assert first is not None and first["variables"] == {"listings": 1}


def test_a_statement_over_its_timeout_fails_the_task_by_name(ports: Ports, run_id: str) -> None:
    spec = {"target": "warehouse", "query": "SELECT pg_sleep(5)", "into": None}
    with pytest.raises(TaskFailed, match="longer than 500 ms") as raised:
        do_task(request(run_id, "slow", "sql", spec), ports)
    assert raised.value.error_name == WORKFLOW_TASK_ERROR


def test_a_target_not_allowed_fails_the_task_and_is_recorded(
    ports: Ports, db: Database, run_id: str
) -> None:
    message = request(
        run_id, "elsewhere", "sql", {"target": "prod", "query": "SELECT 1", "into": None}
    )
    with pytest.raises(TaskFailed, match="'prod' is not allowed here") as raised:
        do_task(message, ports)
    failure_recorder(ports.db, "Workflow")(message, raised.value.error_name, str(raised.value))

    row = task_row(db, run_id, "elsewhere")
    assert row is not None and row["status"] == "failed"
    assert "'prod' is not allowed here" in row["error"]
    # A redelivery fails the same way, from the row, without running anything.
    with pytest.raises(TaskFailed, match="'prod' is not allowed here"):
        do_task(message, ports)


def test_a_message_with_two_statements_runs_neither(
    ports: Ports, db: Database, run_id: str
) -> None:
    # Given a message no compiled machine sends: a query apply would have refused
    spec = {
        "target": "warehouse",
        "query": "SELECT 1; UPDATE public.campaign SET status = 'hacked'",
        "into": None,
    }
    with pytest.raises(TaskFailed, match="has 2 statements"):
        do_task(request(run_id, "sneaky", "sql", spec), ports)
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS hacked FROM public.campaign WHERE status = 'hacked'")
        assert cur.fetchone()["hacked"] == 0


def test_a_query_at_fault_fails_the_task_with_postgresqls_words(ports: Ports, run_id: str) -> None:
    spec = {"target": "warehouse", "query": "SELECT 1 / 0", "into": "x"}
    with pytest.raises(TaskFailed, match=r"SQLSTATE 22012\): division by zero"):
        do_task(request(run_id, "divide", "sql", spec), ports)


# -- notify ---------------------------------------------------------------------------------------


def test_a_notify_task_fills_its_placeholders_and_publishes_once(
    ports: Ports, published: Published, run_id: str
) -> None:
    spec = {"subject": "campaign {campaign_id} live", "message": "{campaign_id}: {n} listings"}
    message = request(run_id, "announce", "notify", spec, campaign_id=7, n=None)

    do_task(message, ports)
    do_task(message, ports)

    assert published.notifications == [("campaign 7 live", "7:  listings")]


# -- ingest ---------------------------------------------------------------------------------------


def ended_child(db: Database, child: str, source_id: str, status: str, **fields: Any) -> None:
    """The child run as the run's services leave it in the ledger when it ends."""
    with db.transaction() as cur:
        cur.execute(
            """
            INSERT INTO public.source_run (execution_arn, execution_name, source_id, status,
                   flow_type, window_start, window_end, records, cursor_after, error,
                   error_detail, finished_at)
            VALUES (%(arn)s, %(name)s, %(source_id)s, %(status)s, 'normal', %(start)s, %(end)s,
                    %(records)s, %(end)s, %(error)s, %(detail)s, now())
            """,
            {
                "arn": f"arn:aws:states:eu-west-1:123456789012:execution:sourceflow-run:{child}",
                "name": child,
                "source_id": source_id,
                "status": status,
                "start": datetime(2026, 11, 28, 15, tzinfo=UTC),
                "end": datetime(2026, 11, 28, 16, tzinfo=UTC),
                "records": fields.get("records"),
                "error": fields.get("error"),
                "detail": fields.get("detail"),
            },
        )


def run_end_event(child: str, source_id: str) -> dict[str, Any]:
    return {
        "detail-type": "Run Succeeded",
        "detail": {"execution_name": child, "source_id": source_id},
    }


def test_an_ingest_task_asks_for_one_run_and_is_answered_once_when_it_ends(
    ports: Ports,
    db: Database,
    published: Published,
    callbacks: FakeCallbacks,
    make_source: MakeSource,
    run_id: str,
) -> None:
    source_id = make_source()
    message = request(run_id, "load", "ingest", {"source": source_id, "flow": "normal"})

    assert do_task(message, ports) is None
    assert do_task(message, ports) is None  # a duplicate delivery asks for nothing more

    assert [kind for kind, _ in published.events] == [DetailType.RUN_REQUESTED]
    row = task_row(db, run_id, "load")
    assert row is not None and row["status"] == "running" and row["child_run_id"]
    child = row["child_run_id"]
    with db.transaction() as cur:
        requested = fetch_one(
            cur, "SELECT source_id FROM public.run_request WHERE execution_name = %s", (child,)
        )
    assert requested == {"source_id": source_id}

    ended_child(db, child, source_id, "succeeded", records=42)
    on_run_ended(run_end_event(child, source_id), db=ports.db, callbacks=callbacks)
    on_run_ended(run_end_event(child, source_id), db=ports.db, callbacks=callbacks)  # a duplicate

    assert len(callbacks.succeeded) == 1 and callbacks.failed == []
    token, output = callbacks.succeeded[0]
    assert token == message["task_token"]
    assert output["variables"] == {
        "load_records": 42,
        "load_window_start": "2026-11-28T15:00:00Z",
        "load_window_end": "2026-11-28T16:00:00Z",
        "load_cursor": "2026-11-28T16:00:00Z",
    }
    assert task_row(db, run_id, "load")["status"] == "succeeded"  # type: ignore[index]


def test_one_delivery_at_a_time_asks_for_the_child_run(
    ports: Ports,
    db: Database,
    published: Published,
    make_source: MakeSource,
    run_id: str,
) -> None:
    # Given a delivery that claimed the asking a moment ago and is still at it
    source_id = make_source()
    message = request(run_id, "load", "ingest", {"source": source_id})
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO public.workflow_task_run (workflow_run_id, task, kind,"
            " child_claimed_at) VALUES (%s, 'load', 'ingest', now())",
            (run_id,),
        )

    # When a duplicate delivery comes, it stands down and asks for nothing
    with pytest.raises(DuplicateDelivery):
        do_task(message, ports)
    assert published.events == []

    # And once that claim is older than the window (its delivery died), a delivery takes over
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.workflow_task_run SET child_claimed_at = now() - %s"
            " WHERE workflow_run_id = %s",
            (CHILD_CLAIM_WINDOW * 2, run_id),
        )
    assert do_task(message, ports) is None
    assert [kind for kind, _ in published.events] == [DetailType.RUN_REQUESTED]


def test_a_delivery_that_failed_to_ask_gives_its_claim_back(
    ports: Ports, published: Published, make_source: MakeSource, run_id: str
) -> None:
    source_id = make_source()
    message = request(run_id, "load", "ingest", {"source": source_id})

    def unreachable(*_: Any, **__: Any) -> str:
        raise TransientError("EventBridge is unreachable")

    with pytest.raises(TransientError):
        do_task(message, replace(ports, publish_event=unreachable))  # type: ignore[arg-type]

    # SQS's next delivery, seconds later, asks
    assert do_task(message, ports) is None
    assert [kind for kind, _ in published.events] == [DetailType.RUN_REQUESTED]


def test_an_ingest_task_whose_child_run_failed_fails_by_name_with_the_runs_error(
    ports: Ports, db: Database, callbacks: FakeCallbacks, make_source: MakeSource, run_id: str
) -> None:
    source_id = make_source()
    do_task(request(run_id, "load", "ingest", {"source": source_id}), ports)
    child = task_row(db, run_id, "load")["child_run_id"]  # type: ignore[index]

    ended_child(db, child, source_id, "failed", error="SourceUnavailable", detail="vendor 503")
    on_run_ended(run_end_event(child, source_id), db=ports.db, callbacks=callbacks)

    assert callbacks.succeeded == []
    [(_, error, cause)] = callbacks.failed
    assert error == WORKFLOW_TASK_ERROR and "vendor 503" in cause
    row = task_row(db, run_id, "load")
    assert row is not None and row["status"] == "failed" and "vendor 503" in row["error"]


def test_an_ingest_task_on_another_flow_sets_it_and_refuses_re_specs(
    ports: Ports, db: Database, make_source: MakeSource, run_id: str
) -> None:
    source_id = make_source()
    do_task(request(run_id, "sold", "ingest", {"source": source_id, "flow": "sold"}), ports)
    with db.transaction() as cur:
        params = fetch_one(
            cur,
            "SELECT batch_execution_params FROM public.source WHERE source_id = %s",
            (source_id,),
        )
    assert params == {"batch_execution_params": {"flow_type": "Sold"}}

    with pytest.raises(TaskFailed, match="cannot set a Re-specs flow"):
        do_task(
            request(run_id, "respecs", "ingest", {"source": source_id, "flow": "respecs"}), ports
        )


def test_a_child_run_skipped_because_its_source_was_busy_is_answered_when_the_other_run_ends(
    ports: Ports, db: Database, callbacks: FakeCallbacks, make_source: MakeSource, run_id: str
) -> None:
    # Given an ingest task whose child run found the source locked by another run: skipped,
    # which no event announces
    source_id = make_source()
    do_task(request(run_id, "load", "ingest", {"source": source_id}), ports)
    child = task_row(db, run_id, "load")["child_run_id"]  # type: ignore[index]
    ended_child(db, child, source_id, "skipped", error="SourceBusy", detail="locked by another")

    # When the run that held the source ends
    holder = f"{source_id}-scheduled-run"
    ended_child(db, holder, source_id, "succeeded", records=3)
    on_run_ended(run_end_event(holder, source_id), db=ports.db, callbacks=callbacks)

    # Then the task fails by name, saying why its run did not load anything
    [(_, error, cause)] = callbacks.failed
    assert error == WORKFLOW_TASK_ERROR and "ended skipped: locked by another" in cause
    assert callbacks.succeeded == []


def test_an_ingest_task_of_a_disabled_source_fails_at_once(
    ports: Ports, db: Database, make_source: MakeSource, run_id: str
) -> None:
    source_id = make_source(is_active=False)
    with pytest.raises(TaskFailed, match="is disabled"):
        do_task(request(run_id, "load", "ingest", {"source": source_id}), ports)


def test_an_ingest_task_of_an_unknown_source_fails_by_name(ports: Ports, run_id: str) -> None:
    with pytest.raises(TaskFailed, match="source 'nowhere' does not exist"):
        do_task(request(run_id, "load", "ingest", {"source": "nowhere"}), ports)


# -- finish ---------------------------------------------------------------------------------------


def finish_request(run_id: str, **statuses: str) -> dict[str, Any]:
    message = request(run_id, "", "finish", {}, campaign_id=7)
    del message["task"], message["spec"]
    return {**message, "statuses": statuses}


def test_a_run_with_a_failed_task_ends_failed_alerts_and_announces_once(
    ports: Ports, db: Database, published: Published, run_id: str
) -> None:
    failing = request(run_id, "refresh", "sql", {"target": "warehouse", "query": "SELECT 1/0"})
    with pytest.raises(TaskFailed) as raised:
        do_task(failing, ports)
    failure_recorder(ports.db, "Workflow")(failing, raised.value.error_name, str(raised.value))
    finish = finish_request(run_id, check="succeeded", refresh="failed", banner="skipped")

    first, again = do_task(finish, ports), do_task(finish, ports)

    assert (
        first
        == again
        == {
            "status": "failed",
            "variables": {},
            "detail": {"failed_tasks": ["refresh"]},
        }
    )
    with db.transaction() as cur:
        ended = fetch_one(
            cur, "SELECT status, ended_at FROM public.workflow_run WHERE id = %s", (run_id,)
        )
    assert ended is not None and ended["status"] == "failed" and ended["ended_at"]
    [(detail_type, detail)] = published.events
    assert detail_type == DetailType.WORKFLOW_RUN_FAILED
    assert detail["failed_tasks"] == ["refresh"] and detail["workflow_run_id"] == run_id
    [(subject, text)] = published.alerts
    assert WORKFLOW in subject and "refresh: " in text and "division by zero" in text
    skipped = task_row(db, run_id, "banner")
    assert skipped is not None and skipped["status"] == "skipped"


def test_a_run_without_a_failure_ends_succeeded_without_an_alert(
    ports: Ports, db: Database, published: Published, run_id: str
) -> None:
    fields = do_task(finish_request(run_id, check="succeeded", banner="skipped"), ports)

    assert fields is not None and fields["status"] == "succeeded"
    assert [kind for kind, _ in published.events] == [DetailType.WORKFLOW_RUN_SUCCEEDED]
    assert published.alerts == []

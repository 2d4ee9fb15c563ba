"""The embedded stack, started once for the e2e session, and factories for sources and runs."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from psycopg2.extras import Json

from infra.resources import Names
from local.partner import PartnerSources
from local.stack import LOCAL_TIMEOUTS, LocalStack, StackOptions, aws_client
from local.ticker import fire_all
from ops.runs import wait_for_execution
from shared.runtime.executions import start_run
from shared.store.db import Database
from shared.store.sources import SourceSpec, get_run, get_source, register_source
from tests.builders import listing

_counter = itertools.count(1)
APPROVAL_SECONDS = 15
DAY = timedelta(days=1)
T = TypeVar("T")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    state_dir = tmp_path_factory.mktemp("stack")
    # A short heartbeat timeout, so that a test can prove heartbeats keep a slow download alive;
    # a short approval timeout, so that a test can watch one run out.
    timeouts = replace(
        LOCAL_TIMEOUTS,
        download_heartbeat_seconds=8,
        heartbeat_interval_seconds=1.0,
        approval_seconds=APPROVAL_SECONDS,
    )
    options = StackOptions(
        state_dir=state_dir,
        database_url=os.environ.get("DATABASE_URL") or None,
        timeouts=timeouts,
        ticker=False,  # tests fire the schedule rules themselves, when they mean to
        # Re-specs tests run their queries unasked; tests/e2e/test_approvals.py turns it on.
        approval_gate=False,
    )
    with LocalStack(options) as running:
        yield running


@pytest.fixture(scope="session")
def aws(stack: LocalStack) -> Any:
    return lambda name: aws_client(stack.env, name)


@pytest.fixture(scope="session")
def db(stack: LocalStack) -> Iterator[Database]:
    database = Database(stack.env["DATABASE_URL"], application_name="sourceflow-tests")
    yield database
    database.close()


@dataclass
class Vendor:
    url: str

    def put(
        self, dataset: str, records: list[Mapping[str, Any]], *, visible_after_s: int = 0
    ) -> list[dict[str, Any]]:
        """Upsert; returns the records as stored (stamped by the vendor unless they carry
        last_modified), each visible `visible_after_s` after its stamp."""
        response = requests.post(
            f"{self.url}/datasets/{dataset}/records",
            json={"records": records, "visible_after_s": visible_after_s},
            timeout=10,
        )
        response.raise_for_status()
        return list(response.json()["records"])

    def set_clock(self, dataset: str, offset_s: int) -> None:
        """Run the dataset's clock `offset_s` seconds ahead of the run's (negative: behind)."""
        requests.post(
            f"{self.url}/admin/clock", json={"dataset": dataset, "offset_s": offset_s}, timeout=10
        ).raise_for_status()

    def fault(self, dataset: str, **fault: Any) -> None:
        requests.post(
            f"{self.url}/admin/faults", json={"dataset": dataset, **fault}, timeout=10
        ).raise_for_status()

    def clear_faults(self) -> None:
        requests.delete(f"{self.url}/admin/faults", timeout=10).raise_for_status()


@pytest.fixture
def vendor(stack: LocalStack) -> Iterator[Vendor]:
    the_vendor = Vendor(stack.env["VENDOR_URL"])
    yield the_vendor
    the_vendor.clear_faults()


def wait_for(condition: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Poll `condition` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


@dataclass
class RunResult:
    execution_arn: str
    status: str
    error: str | None
    output: dict[str, Any] | None
    run: dict[str, Any]
    source: dict[str, Any] | None


@dataclass(frozen=True)
class SlowSource:
    source_id: str
    dataset: str
    cursor: datetime


@dataclass
class Harness:
    stack: LocalStack
    db: Database
    aws: Any
    vendor: Vendor

    @staticmethod
    def unique_name() -> str:
        """A name no other test of any session uses (datasets, tables, prefixes)."""
        return f"t{next(_counter):03d}-{os.getpid()}"

    @property
    def partner(self) -> PartnerSources:
        """The partner database and drops bucket the stack created."""
        return PartnerSources.from_env(self.stack.env)

    def new_dataset(self, records_ago: list[timedelta], *, now: datetime | None = None) -> str:
        """A vendor dataset of its own for one test, with records modified `ago` before now."""
        dataset = self.unique_name()
        now = now or datetime.now(UTC)
        self.vendor.put(
            dataset, [listing(dataset, i, now - ago) for i, ago in enumerate(records_ago)]
        )
        return dataset

    def new_source(
        self,
        dataset: str,
        *,
        cursor: datetime | None = None,
        runtime_count: int = 0,
        params: Mapping[str, Any] | None = None,
        backdate_days: int = 30,
        is_active: bool = True,
        base_url: str | None = None,
        source_type: str = "http_api",
        connection: Mapping[str, Any] | None = None,
    ) -> str:
        """A source named after `dataset`; by default the vendor's http_api dataset."""
        source_id = f"src-{dataset}"
        register_source(
            self.db,
            SourceSpec(
                source_id=source_id,
                name=f"test source {dataset}",
                source_type=source_type,
                connection=connection
                or {"base_url": base_url or self.vendor.url, "dataset": dataset},
                backdate_days=backdate_days,
                batch_execution_params=params,
                is_active=is_active,
            ),
        )
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE public.source SET last_modified_date = %s, runtime_count = %s"
                " WHERE source_id = %s",
                (cursor, runtime_count, source_id),
            )
        return source_id

    def slow_source(
        self, pages: int, delay_ms: int, *, runtime_count: int, now: datetime | None = None
    ) -> SlowSource:
        """A source a day behind a dataset of `pages` records modified since, served one record
        a page, each page `delay_ms` late: a download that is under way for a while."""
        now = now or datetime.now(UTC)
        dataset = self.new_dataset([DAY / 10] * pages, now=now)
        cursor = now - DAY
        source_id = self.new_source(dataset, runtime_count=runtime_count, cursor=cursor)
        self.set_page_size(source_id, 1)
        self.vendor.fault(dataset, page_delay_ms=delay_ms)
        return SlowSource(source_id, dataset, cursor)

    def run_row(self, execution_arn: str) -> dict[str, Any] | None:
        return get_run(self.db, execution_arn)

    def run_source_row(self, source_id: str) -> dict[str, Any]:
        source = get_source(self.db, source_id)
        assert source is not None, source_id
        return source

    def set_params(self, source_id: str, params: Mapping[str, Any] | None) -> None:
        """What an operator does by hand: write batch_execution_params directly."""
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE public.source SET batch_execution_params = %s WHERE source_id = %s",
                (Json(dict(params)) if params is not None else None, source_id),
            )

    def set_lock(
        self,
        source_id: str,
        holder: str | None,
        locked_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        """Write the source's lock directly: held by `holder` (an execution ARN), or released
        when all three are None."""
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE public.source SET locked_by = %s, locked_at = %s, lock_expires_at = %s"
                " WHERE source_id = %s",
                (holder, locked_at, expires_at, source_id),
            )

    def set_page_size(self, source_id: str, page_size: int) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE public.source SET connection = connection || jsonb_build_object("
                "'page_size', %s) WHERE source_id = %s",
                (page_size, source_id),
            )

    def start(self, source_id: str) -> str:
        return start_run(self.aws("stepfunctions"), self.stack.env["STATE_MACHINE_ARN"], source_id)

    def finish(self, execution_arn: str, source_id: str) -> RunResult:
        described = wait_for_execution(self.aws("stepfunctions"), execution_arn, timeout=90)
        output = json.loads(described["output"]) if described.get("output") else None
        return RunResult(
            execution_arn,
            described["status"],
            described.get("error"),
            output,
            get_run(self.db, execution_arn) or {},
            get_source(self.db, source_id),
        )

    def wait_until_locked(self, source_id: str, execution_arn: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            source = get_source(self.db, source_id)
            if source and source["locked_by"] == execution_arn:
                return
            time.sleep(0.05)
        raise AssertionError(f"{execution_arn} never took the lock of {source_id}")

    def wait_until_downloading(
        self, execution_arn: str, records: int = 2, timeout: float = 30.0
    ) -> dict[str, Any]:
        """The run's ledger row, once its heartbeats report `records` records downloaded."""

        def under_way() -> dict[str, Any] | None:
            run = self.run_row(execution_arn)
            return run if run and (run["progress_records"] or 0) >= records else None

        return wait_for(under_way, f"the download of {execution_arn} to get going", timeout)

    def wait_for_executions(
        self, source_id: str, count: int, timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """The source's executions, once there are at least `count`."""

        def enough() -> list[dict[str, Any]] | None:
            executions = self.executions_of(source_id)
            return executions if len(executions) >= count else None

        return wait_for(enough, f"{count} executions of {source_id}", timeout)

    def run(self, source_id: str) -> RunResult:
        return self.finish(self.start(source_id), source_id)

    def raw_objects(self, prefix: str) -> dict[str, bytes]:
        s3 = self.aws("s3")
        bucket = self.stack.env["RAW_BUCKET"]
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return {
            item["Key"]: s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for item in listed
        }

    def raw_output(self, result: RunResult) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The run's manifest, and the records of its parts in the order they were written;
        asserts the manifest names exactly the objects under the run's prefix, with their
        hashes, sizes and record counts."""
        prefix = f"{result.run['source_id']}/{result.execution_arn.rsplit(':', 1)[1]}/"
        objects = self.raw_objects(prefix)
        manifest = json.loads(objects.pop(f"{prefix}manifest.json"))
        assert sorted(objects) == sorted(entry["key"] for entry in manifest["objects"])
        records: list[dict[str, Any]] = []
        for entry in manifest["objects"]:
            body = objects[entry["key"]]
            assert hashlib.sha256(body).hexdigest() == entry["sha256"], entry
            assert len(body) == entry["bytes"], entry
            lines = gzip.decompress(body).splitlines()
            assert len(lines) == entry["records"], entry
            records.extend(json.loads(line) for line in lines)
        assert len(records) == manifest["records"], manifest
        return manifest, records

    def alerts_about(self, source_id: str) -> list[str]:
        """The alerts naming the source among those one read of the alerts queue takes; every
        alert read is deleted."""
        sqs, alerts = self.aws("sqs"), self.stack.env["ALERTS_QUEUE_URL"]
        found = []
        for message in sqs.receive_message(
            QueueUrl=alerts, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", []):
            sqs.delete_message(QueueUrl=alerts, ReceiptHandle=message["ReceiptHandle"])
            if source_id in message["Body"]:
                found.append(str(message["Body"]))
        return found

    def notifications(
        self, key: Callable[[dict[str, Any]], str | None], wanted: set[str], timeout: float = 20.0
    ) -> dict[str, Any]:
        """Events on the notifications queue whose `key` is in `wanted`.

        Every event read is deleted; `harness` drains the queue before each test.
        """
        found: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while set(found) != wanted and time.monotonic() < deadline:
            for event in self._take_notifications(wait_seconds=1):
                if key(event) in wanted:
                    found[str(key(event))] = event
        return found

    def drain_notifications(self) -> None:
        while self._take_notifications(wait_seconds=0):
            pass

    def _take_notifications(self, wait_seconds: int) -> list[dict[str, Any]]:
        sqs, queue_url = self.aws("sqs"), self.stack.env["NOTIFICATIONS_QUEUE_URL"]
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
        ).get("Messages", [])
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return [json.loads(message["Body"]) for message in messages]

    def outcome_events(self, execution_arns: set[str]) -> dict[str, Any]:
        """Run Succeeded / Run Failed events of these executions."""
        return self.notifications(lambda e: e["detail"].get("execution_arn"), execution_arns)

    def tick(self, at: datetime | None = None) -> None:
        """Fire the schedule rules once and wait until the scheduler has handled the tick."""
        fire_all(
            self.aws("events"),
            self.aws("sqs"),
            Names(self.stack.env["SOURCEFLOW_STAGE"]).prefix,
            at=at,
        )
        self.wait_for_scheduler()

    def wait_for_scheduler(self, timeout: float = 30.0) -> None:
        self.wait_until_idle(self.stack.env["SCHEDULER_QUEUE_URL"], timeout)

    def wait_until_idle(self, queue_url: str, timeout: float = 30.0) -> None:
        """Until the queue is empty and nothing is in flight, twice in a row."""
        sqs = self.aws("sqs")
        idle_checks, deadline = 0, time.monotonic() + timeout
        while idle_checks < 2:
            attributes = sqs.get_queue_attributes(
                QueueUrl=queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            busy = sum(int(value) for value in attributes.values())
            idle_checks = idle_checks + 1 if busy == 0 else 0
            assert time.monotonic() < deadline, f"{queue_url} still busy: {attributes}"
            time.sleep(0.3)

    def task_messages(self, execution_arn: str) -> dict[str, tuple[str, dict[str, Any]]]:
        """Each callback task's SQS message as the state machine sent it: state → (queue, body)."""
        history = self.aws("stepfunctions").get_execution_history(
            executionArn=execution_arn, maxResults=1000
        )["events"]
        messages, state = {}, ""
        for event in history:
            if event["type"] == "TaskStateEntered":
                state = event["stateEnteredEventDetails"]["name"]
            elif event["type"] == "TaskScheduled":
                details = event["taskScheduledEventDetails"]
                if details["resource"] == "sendMessage.waitForTaskToken":
                    parameters = json.loads(details["parameters"])
                    messages[state] = (parameters["QueueUrl"], parameters["MessageBody"])
        return messages

    def sourceflow(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        """The operator's command against this stack, run by `user` (default: whoever runs
        the tests)."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "ops.cli",
                *args,
                "--state-dir",
                str(self.stack.options.state_dir),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "USER": user} if user else None,
        )

    def executions_of(self, source_id: str) -> list[dict[str, Any]]:
        sfn = self.aws("stepfunctions")
        pages = sfn.get_paginator("list_executions").paginate(
            stateMachineArn=self.stack.env["STATE_MACHINE_ARN"]
        )
        return [
            execution
            for page in pages
            for execution in page["executions"]
            if execution["name"].startswith(f"{source_id}-")
        ]

    def set_schedule(
        self,
        source_id: str,
        *,
        interval: str | None = None,
        cron: str | None = None,
        last_slot: datetime | None = None,
    ) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE public.source SET schedule_interval = %s::interval, schedule_cron = %s,"
                " last_scheduled_slot = %s WHERE source_id = %s",
                (interval, cron, last_slot, source_id),
            )

    def seed_attributes(self, source_id: str, count: int) -> None:
        """Listing attribute rows of the source for a Re-specs query to update."""
        with self.db.transaction() as cur:
            for index in range(count):
                cur.execute(
                    "INSERT INTO public.listing_attributes (source_id, listing_id, attribute,"
                    " value) VALUES (%s, %s, 'area_unit', 'sqft')",
                    (source_id, f"L{index}"),
                )

    def attributes(self, source_id: str) -> dict[str, str]:
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT listing_id, value FROM public.listing_attributes WHERE source_id = %s",
                (source_id,),
            )
            return {row["listing_id"]: row["value"] for row in cur.fetchall()}

    def flow_history(self, source_id: str) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT * FROM public.source_flow_history WHERE source_id = %s ORDER BY change_id",
                (source_id,),
            )
            return [dict(row) for row in cur.fetchall()]


@pytest.fixture
def harness(stack: LocalStack, db: Database, aws: Any, vendor: Vendor) -> Harness:
    harness = Harness(stack, db, aws, vendor)
    harness.drain_notifications()  # each test reads only the notifications it caused
    return harness


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)

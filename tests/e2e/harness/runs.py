"""Runs of the state machine: starting one, waiting for it, and what it left behind — its
ledger row, its lock, its executions, its task messages, its raw output."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from local.stack import LocalStack
from ops.runs import wait_for_execution
from shared.runtime.executions import start_run
from shared.store.db import Database
from shared.store.sources import get_run, get_source
from tests.e2e.harness.stack import Aws
from tests.e2e.harness.waits import RUN_SECONDS, WAIT_SECONDS, wait_for


@dataclass
class RunResult:
    execution_arn: str
    status: str
    error: str | None
    output: dict[str, Any] | None
    run: dict[str, Any]
    source: dict[str, Any] | None


@dataclass
class Runs:
    stack: LocalStack
    db: Database
    aws: Aws

    def start(self, source_id: str) -> str:
        return start_run(self.aws("stepfunctions"), self.stack.env["STATE_MACHINE_ARN"], source_id)

    def finish(self, execution_arn: str, source_id: str) -> RunResult:
        described = wait_for_execution(self.aws("stepfunctions"), execution_arn, RUN_SECONDS)
        output = json.loads(described["output"]) if described.get("output") else None
        return RunResult(
            execution_arn,
            described["status"],
            described.get("error"),
            output,
            get_run(self.db, execution_arn) or {},
            get_source(self.db, source_id),
        )

    def run(self, source_id: str) -> RunResult:
        return self.finish(self.start(source_id), source_id)

    def run_row(self, execution_arn: str) -> dict[str, Any] | None:
        return get_run(self.db, execution_arn)

    def wait_until_locked(
        self, source_id: str, execution_arn: str, timeout: float = WAIT_SECONDS
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            source = get_source(self.db, source_id)
            if source and source["locked_by"] == execution_arn:
                return
            time.sleep(0.05)
        raise AssertionError(f"{execution_arn} never took the lock of {source_id}")

    def wait_until_downloading(
        self, execution_arn: str, records: int = 2, timeout: float = WAIT_SECONDS
    ) -> dict[str, Any]:
        """The run's ledger row, once its heartbeats report `records` records downloaded."""

        def under_way() -> dict[str, Any] | None:
            run = self.run_row(execution_arn)
            return run if run and (run["progress_records"] or 0) >= records else None

        return wait_for(under_way, f"the download of {execution_arn} to get going", timeout)

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

    def wait_for_executions(
        self, source_id: str, count: int, timeout: float = WAIT_SECONDS
    ) -> list[dict[str, Any]]:
        """The source's executions, once there are at least `count`."""

        def enough() -> list[dict[str, Any]] | None:
            executions = self.executions_of(source_id)
            return executions if len(executions) >= count else None

        return wait_for(enough, f"{count} executions of {source_id}", timeout)

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

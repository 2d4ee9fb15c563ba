"""`sourceflow logs`: the services' lines read from the embedded stack's files or from
CloudWatch Logs, a run's lines found by its execution name, each printed on one line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.resources import Names
from ops.config import LOGS_DIR_VARIABLE, OperatorConfig, OperatorError
from ops.logs import (
    CloudWatchLogs,
    LogFiles,
    log_store,
    parse_lines,
    read_logs,
    service_of_worker,
)

RUN = "src-a-20261128T084157Z-944f5d63"
OTHER = "src-b-20261128T084201Z-f87860bb"
ARN = "arn:aws:states:us-east-1:123456789012:execution:sourceflow-local-run:"
NAMES = Names("test")


def powertools(at: str, message: str, run: str | None = None, **fields: Any) -> str:
    """A JSON line as powertools writes it (shared/runtime/observability.py)."""
    line = {
        "level": "INFO",
        "location": "_attempt:183",
        "message": message,
        "timestamp": at,
        "service": "sourceflow-download",
        "cold_start": False,
        "function_name": "sourceflow-local-download",
        "function_request_id": "1d9eac35",
        **({"execution_arn": ARN + run} if run else {}),
        **fields,
    }
    return json.dumps(line)


def test_a_powertools_line_reads_as_time_origin_level_message_and_the_run_fields() -> None:
    text = powertools("2026-11-28 08:41:59,206+0000", "task done", RUN, records=21, objects=1)
    [line] = parse_lines([text], service="download", origin="download-0")
    assert line.at == datetime(2026, 11, 28, 8, 41, 59, 206000, tzinfo=UTC)
    assert line.fields == {"execution_arn": ARN + RUN, "records": 21, "objects": 1}
    assert line.mentions(RUN) and not line.mentions(OTHER)
    assert line.text() == (
        f"2026-11-28T08:41:59.206Z download-0    INFO    task done  run={RUN} records=21 objects=1"
    )
    assert line.as_json()["time"] == "2026-11-28T08:41:59.206000Z"


def test_a_traceback_goes_with_the_plain_line_before_it() -> None:
    lines = [
        "2026-11-28 08:41:54,354 sourceflow.worker download handler raised; redelivered\n",
        "Traceback (most recent call last):\n",
        '  File "x.py", line 1, in <module>\n',
        f"RuntimeError: boom in {RUN}\n",
        powertools("2026-11-28 08:41:59,206+0000", "task done", OTHER),
    ]
    first, second = parse_lines(lines, service="download", origin="download-0")
    assert first.level == "ERROR" and first.message.startswith("download handler raised")
    assert first.mentions(RUN) and not second.mentions(RUN)
    assert first.text().splitlines()[1:] == [
        "    Traceback (most recent call last):",
        '      File "x.py", line 1, in <module>',
        f"    RuntimeError: boom in {RUN}",
    ]


def test_the_stacks_files_give_a_runs_lines_from_every_service_in_time_order(
    tmp_path: Path,
) -> None:
    # Given the workers' logs, with other parts' logs beside them
    (tmp_path / "validation-0.log").write_text(
        powertools("2026-11-28 08:41:55,472+0000", "task done", RUN, decision="run") + "\n"
    )
    (tmp_path / "download-1.log").write_text(
        "2026-11-28 08:41:54,717 sourceflow.worker worker for download polling q\n"
        + powertools("2026-11-28 08:41:59,206+0000", "task done", RUN, records=21)
        + "\n"
        + powertools("2026-11-28 08:42:01,343+0000", "task done", OTHER, records=6)
        + "\n"
    )
    (tmp_path / "moto.log").write_text(f"POST / {RUN}\n")
    store = LogFiles(tmp_path)

    # When a run's lines are read (by its ARN, as by its name)
    lines = read_logs(store, run=ARN + RUN)

    # Then they are that run's, of every service, oldest first
    assert [(line.origin, line.message) for line in lines] == [
        ("validation-0", "task done"),
        ("download-1", "task done"),
    ]
    assert [line.origin for line in read_logs(store, services=["download"])] == ["download-1"] * 3
    since = datetime(2026, 11, 28, 8, 42, tzinfo=UTC)
    assert [line.fields.get("records") for line in read_logs(store, since=since)] == [6]
    assert read_logs(store, run="no-such-run") == []


def test_a_missing_log_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(OperatorError, match=r"no log directory .*SOURCEFLOW_LOGS_DIR"):
        read_logs(LogFiles(tmp_path / "gone"))


def test_worker_names_give_their_service_and_nothing_else_does() -> None:
    assert service_of_worker("download-0") == "download"
    assert service_of_worker("validation-12") == "validation"
    assert service_of_worker("moto") is None and service_of_worker("vendor") is None


@mock_aws
def test_cloudwatch_gives_a_runs_lines_from_each_service_log_group() -> None:
    # Given two service functions' log groups, with Lambda's own lines beside powertools'
    logs = boto3.client("logs", region_name="us-east-1")
    now = datetime.now(UTC).replace(microsecond=0)
    stamp = now.strftime("%Y-%m-%d %H:%M:%S,000+0000")
    events = {
        "validation": [powertools(stamp, "task done", RUN), powertools(stamp, "task done", OTHER)],
        "download": [f"START RequestId: 1d9e Version: $LATEST {RUN}"],
    }
    for service, messages in events.items():
        group = NAMES.log_group(service)
        logs.create_log_group(logGroupName=group)
        logs.create_log_stream(logGroupName=group, logStreamName="2026/11/28/[$LATEST]3f1c9a0b2d")
        logs.put_log_events(
            logGroupName=group,
            logStreamName="2026/11/28/[$LATEST]3f1c9a0b2d",
            logEvents=[
                {"timestamp": int(now.timestamp() * 1000) + index, "message": message}
                for index, message in enumerate(messages)
            ],
        )
    store = CloudWatchLogs(logs, NAMES)

    # When a run's lines are read, Then each service's lines that mention it come
    lines = read_logs(store, services=["validation", "download"], run=RUN)
    assert sorted((line.service, line.origin, line.message) for line in lines) == [
        ("download", "download:3f1c9a0b", f"START RequestId: 1d9e Version: $LATEST {RUN}"),
        ("validation", "validation:3f1c9a0b", "task done"),
    ]
    # And --since leaves out what came before it
    later = now + timedelta(minutes=1)
    assert read_logs(store, services=["validation"], since=later) == []
    # And a deployment with no log group at all is named, with what to check
    with pytest.raises(OperatorError, match="no log group /aws/lambda/sourceflow-test-scheduler"):
        read_logs(store, services=["scheduler"])


@pytest.fixture
def no_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    # (credentials of no one, so that making a client looks for none on the network)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_the_logs_are_read_where_the_stack_or_the_cloud_keeps_them(
    tmp_path: Path, no_region: None
) -> None:
    stack_dir = tmp_path / "state"
    # A running stack's local.env names its directory
    named = OperatorConfig({LOGS_DIR_VARIABLE: "/somewhere/logs"}, "local.env")
    assert log_store(named, stack_dir) == LogFiles(Path("/somewhere/logs"))
    # Without a region nothing reaches CloudWatch: a stopped stack's directory, if there is one
    nothing = OperatorConfig({}, "the environment")
    with pytest.raises(OperatorError, match="no logs to read: no SOURCEFLOW_LOGS_DIR"):
        log_store(nothing, stack_dir)
    (stack_dir / "logs").mkdir(parents=True)
    assert log_store(nothing, stack_dir) == LogFiles(stack_dir / "logs")
    # With a region, CloudWatch Logs
    cloud = OperatorConfig({"AWS_DEFAULT_REGION": "eu-west-1"}, "the environment")
    store = log_store(cloud, stack_dir)
    assert isinstance(store, CloudWatchLogs) and store.names == Names("local")

"""`sourceflow logs`: a run's log lines from every service, merged in time order and readable.

Every service logs JSON lines (powertools, shared/runtime/observability.py) that carry the run's
execution ARN, and every message a run's steps exchange carries its execution name as the
correlation id: a run's lines are the lines that mention its execution name. They are read
from where the services write them:

- on the embedded stack, the workers' log files, `<state dir>/logs/<service>-<n>.log`
  (`SOURCEFLOW_LOGS_DIR`, which `sourceflow up` writes into local.env; once it has stopped,
  `<state dir>/logs` when no AWS region is configured): JSON lines, and the worker's own plain
  lines (`2026-11-28 08:41:54,354 sourceflow.worker …`, a traceback's lines going with the line
  before them);
- in the cloud, each function's CloudWatch Logs group, `/aws/lambda/sourceflow-<stage>-<service>`,
  through FilterLogEvents with the execution name as a quoted term, which CloudWatch matches
  as the same exact phrase.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from infra.resources import SERVICES, Names
from ops.config import LOGS_DIR_VARIABLE, OperatorConfig, OperatorError
from shared.timefmt import isoformat

# The keys every powertools line carries that say nothing about the run.
_NOISE = frozenset(
    {
        "level",
        "message",
        "timestamp",
        "service",
        "location",
        "cold_start",
        "function_name",
        "function_memory_size",
        "function_arn",
        "function_request_id",
        "xray_trace_id",
        "sampling_rate",
        "exception",
        "exception_name",
        "stack_trace",
    }
)
# The head of a plain line of Python's logging (the worker's own, local/worker.py).
_PLAIN_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),(\d{3}) (\S+) (.*)$")


@dataclass(frozen=True)
class LogLine:
    at: datetime
    service: str
    origin: str  # the worker (download-0) or the CloudWatch log stream
    level: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    detail: str = ""  # an exception's traceback, shown below the line
    raw: str = ""  # the line as written, which a run is found in

    def mentions(self, run: str) -> bool:
        return run in self.raw

    def as_json(self) -> dict[str, Any]:
        return {
            "time": isoformat(self.at),
            "service": self.service,
            "origin": self.origin,
            "level": self.level,
            "message": self.message,
            "fields": self.fields,
            "detail": self.detail or None,
        }

    def text(self) -> str:
        """One readable line (`2026-11-28T08:41:59.206Z download-0 INFO task done run=…`),
        and the exception's lines indented below it."""
        shown = {key: value for key, value in self.fields.items() if key != "execution_arn"}
        arn = self.fields.get("execution_arn")
        if isinstance(arn, str):
            shown = {"run": arn.rsplit(":", 1)[-1], **shown}
        words = " ".join(f"{key}={_value(value)}" for key, value in shown.items())
        head = f"{_stamp(self.at)} {self.origin:<13} {self.level:<7} {self.message}"
        text = f"{head}  {words}" if words else head
        if self.detail:
            text += "".join(f"\n    {line}" for line in self.detail.rstrip().splitlines())
        return text


def _stamp(moment: datetime) -> str:
    """Milliseconds and Z: `2026-11-28T08:41:59.206Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def parse_lines(
    lines: Iterable[str], *, service: str, origin: str, received_at: datetime | None = None
) -> Iterator[LogLine]:
    """The entries of a log: one per JSON line or plain logging line; any other line (a
    traceback's) goes with the entry before it. A line with no time of its own is dated
    `received_at` (CloudWatch's timestamp), or dropped when there is none and nothing before."""
    entry: LogLine | None = None
    for line in lines:
        parsed = _parse(line, service=service, origin=origin, received_at=received_at)
        if parsed is not None:
            if entry is not None:
                yield entry
            entry = parsed
        elif entry is not None and line.strip():
            entry = _continued(entry, line)
    if entry is not None:
        yield entry


def _parse(line: str, *, service: str, origin: str, received_at: datetime | None) -> LogLine | None:
    text = line.rstrip("\n")
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if isinstance(document, dict) and "message" in document:
            return _from_json(document, text, service=service, origin=origin, fallback=received_at)
    plain = _PLAIN_LINE.match(text)
    if plain:
        day_and_time, millis, logger_name, message = plain.groups()
        at = datetime.strptime(f"{day_and_time}.{millis}", "%Y-%m-%d %H:%M:%S.%f")
        return LogLine(
            at.astimezone(UTC),  # logging writes the machine's local time
            service,
            origin,
            "INFO",
            message,
            {"logger": logger_name},
            raw=text,
        )
    if received_at is not None and text.strip():  # Lambda's own START/END/REPORT lines
        return LogLine(received_at, service, origin, "INFO", text.strip(), raw=text)
    return None


def _from_json(
    document: dict[str, Any],
    text: str,
    *,
    service: str,
    origin: str,
    fallback: datetime | None,
) -> LogLine | None:
    at = _time(document.get("timestamp")) or fallback
    if at is None:
        return None
    return LogLine(
        at,
        service,
        origin,
        str(document.get("level", "INFO")),
        str(document["message"]),
        {key: value for key, value in document.items() if key not in _NOISE},
        detail=str(document.get("exception") or ""),
        raw=text,
    )


def _time(value: Any) -> datetime | None:
    """Powertools' `2026-11-28 08:41:59,206+0000`, or ISO-8601 with a zone."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace(",", "."))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


def _continued(entry: LogLine, line: str) -> LogLine:
    detail = f"{entry.detail}\n{line.rstrip()}" if entry.detail else line.rstrip()
    return LogLine(
        entry.at,
        entry.service,
        entry.origin,
        "ERROR" if line.startswith("Traceback") else entry.level,
        entry.message,
        entry.fields,
        detail,
        f"{entry.raw}\n{line.rstrip()}",
    )


def service_of_worker(name: str) -> str | None:
    """The service whose worker `name` (`download-0`, a log file's stem) is; None for the other
    parts of the embedded stack (moto, the vendor)."""
    service = name.rpartition("-")[0]
    return service if service in SERVICES else None


def run_name(run: str) -> str:
    """An execution's name, given its name or its ARN."""
    return run.rsplit(":", 1)[-1]


# -- where the lines are ----------------------------------------------------------------------


class LogStore(Protocol):
    def read(
        self, services: Sequence[str], *, since: datetime | None, run: str | None
    ) -> Iterator[LogLine]:
        """The services' lines since `since` that mention `run` (every line without one)."""
        ...


@dataclass(frozen=True)
class LogFiles:
    """The embedded stack's workers' log files."""

    directory: Path

    def read(
        self, services: Sequence[str], *, since: datetime | None, run: str | None
    ) -> Iterator[LogLine]:
        if not self.directory.is_dir():
            raise OperatorError(
                f"no log directory {self.directory}; is SOURCEFLOW_LOGS_DIR right (`sourceflow "
                "up` writes it into local.env)?"
            )
        for path in sorted(self.directory.glob("*.log")):
            service = service_of_worker(path.stem)
            if service is None or service not in services:
                continue
            with path.open(errors="replace") as lines:
                for line in parse_lines(lines, service=service, origin=path.stem):
                    if _wanted(line, since, run):
                        yield line


@dataclass(frozen=True)
class CloudWatchLogs:
    """Each service function's log group in CloudWatch Logs."""

    logs: Any  # a boto3 CloudWatch Logs client
    names: Names

    def read(
        self, services: Sequence[str], *, since: datetime | None, run: str | None
    ) -> Iterator[LogLine]:
        options: dict[str, Any] = {}
        if run is not None:
            options["filterPattern"] = f'"{run}"'
        if since is not None:
            options["startTime"] = int(since.timestamp() * 1000)
        missing = []
        for service in services:
            group = self.names.log_group(service)
            try:
                pages = list(
                    self.logs.get_paginator("filter_log_events").paginate(
                        logGroupName=group, **options
                    )
                )
            except self.logs.exceptions.ResourceNotFoundException:
                missing.append(group)
                continue
            for page in pages:
                for event in page["events"]:
                    received = datetime.fromtimestamp(event["timestamp"] / 1000, UTC)
                    # A stream is one container: `2026/11/28/[$LATEST]3f1c…`.
                    container = event.get("logStreamName", "").rsplit("]", 1)[-1][:8]
                    for line in parse_lines(
                        event["message"].splitlines(),
                        service=service,
                        origin=f"{service}:{container}",
                        received_at=received,
                    ):
                        if _wanted(line, since, run):
                            yield line
        if len(missing) == len(services):
            raise OperatorError(
                f"no log group {', '.join(missing)}; is SOURCEFLOW_STAGE ({self.names.stage}) "
                "and the region right?"
            )


def log_store(config: OperatorConfig, state_dir: Path) -> LogStore:
    """Where the lines are: the directory SOURCEFLOW_LOGS_DIR names (a running stack's
    local.env sets it); else, with no AWS region configured, a stopped embedded stack's
    `<state dir>/logs`; else CloudWatch Logs."""
    import boto3

    named = config.values.get(LOGS_DIR_VARIABLE)
    if named:
        return LogFiles(Path(named))
    region = config.values.get("AWS_DEFAULT_REGION") or boto3.Session().region_name
    if region:
        return CloudWatchLogs(config.client("logs"), config.names)
    if (state_dir / "logs").is_dir():
        return LogFiles(state_dir / "logs")
    raise OperatorError(
        f"no logs to read: no {LOGS_DIR_VARIABLE} (`sourceflow up` writes it into local.env), "
        f"no {state_dir / 'logs'} and no AWS region for CloudWatch Logs; give --state-dir of "
        "the embedded stack, or set AWS_DEFAULT_REGION"
    )


def _wanted(line: LogLine, since: datetime | None, run: str | None) -> bool:
    return (since is None or line.at >= since) and (run is None or line.mentions(run))


def read_logs(
    store: LogStore,
    *,
    services: Sequence[str] = SERVICES,
    since: datetime | None = None,
    run: str | None = None,
) -> list[LogLine]:
    """The lines of `services` since `since` that mention `run` (its name or ARN), oldest
    first."""
    wanted = run_name(run) if run else None
    return sorted(store.read(services, since=since, run=wanted), key=lambda line: line.at)

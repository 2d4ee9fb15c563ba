"""What the on-call operator asks and does: plain functions over the database and AWS clients,
returning rows (dicts) that the command line renders as tables or JSON.

Everything here works the same against the embedded stack and AWS: the configuration comes
from the environment, or from the `local.env` a running `sourceflow up` wrote.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.approvals import STEP as APPROVE_STEP
from infra.approvals import cancel_waiting
from infra.audit import LEDGER_COLUMNS, Audit, LedgerRun
from infra.audit import audit as audit_ledger
from infra.resources import SERVICES, Names
from infra.sources import get_run, get_source
from shared.errors import SourceflowError
from shared.rules.flows import FlowParams, InvalidFlowParams, parse_flow_params
from shared.rules.respecs import check_respecs_query, parse_allowed_tables
from shared.runtime.events import EventPublisher
from shared.runtime.executions import requested_run_nonce
from shared.runtime.tasks import TaskCallbacks
from shared.store.db import Database
from shared.store.ledger import OPEN_RUN_STATUSES, set_flow_params

# What `local.env` or the environment must provide, and how to get it when it does not.
CONFIG_KEYS = (
    "DATABASE_URL",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "STATE_MACHINE_ARN",
    "EVENT_BUS_NAME",
    "SOURCEFLOW_STAGE",
    "RESPECS_ALLOWED_TABLES",
)
SOURCE_SHOW_RUNS = 10  # the last runs `sourceflow sources show` lists
# `sourceflow run --wait`: how long to look for the execution the request started, then how
# often to look at it and how long at most.
REQUESTED_EXECUTION_TIMEOUT_SECONDS = 60.0
FOLLOW_POLL_SECONDS = 0.5
FOLLOW_TIMEOUT_SECONDS = 3600.0


class OperatorError(SourceflowError):
    """Something the operator can fix; its message says what and how."""


@dataclass(frozen=True)
class OperatorConfig:
    values: Mapping[str, str]
    origin: str  # where the values came from, for error messages

    @classmethod
    def load(cls, state_dir: Path, environ: Mapping[str, str]) -> OperatorConfig:
        """`local.env` of a running local stack, overridden by the environment."""
        from infra.local.stack import read_env_file

        env_file = state_dir / "local.env"
        values = read_env_file(env_file) if env_file.exists() else {}
        values.update({key: environ[key] for key in CONFIG_KEYS if environ.get(key)})
        origin = f"{env_file} and the environment" if env_file.exists() else "the environment"
        return cls(values, origin)

    def require(self, key: str) -> str:
        value = self.values.get(key)
        if not value:
            raise OperatorError(
                f"{key} is not set (looked in {self.origin}); start the local stack with "
                f"`sourceflow up`, or export {key} for the deployment you want to reach"
            )
        return value

    @property
    def stage(self) -> str:
        return self.values.get("SOURCEFLOW_STAGE") or "local"

    @property
    def names(self) -> Names:
        return Names(self.stage)

    def client(self, service_name: str) -> Any:
        import boto3

        options = {
            "region_name": self.values.get("AWS_DEFAULT_REGION") or None,
            "endpoint_url": self.values.get("AWS_ENDPOINT_URL") or None,
        }
        if self.values.get("AWS_ACCESS_KEY_ID"):
            options["aws_access_key_id"] = self.values["AWS_ACCESS_KEY_ID"]
            options["aws_secret_access_key"] = self.values.get("AWS_SECRET_ACCESS_KEY")
        return boto3.client(service_name, **options)


# -- sources ----------------------------------------------------------------------------------


def flow_name(source_id: str, params: Mapping[str, Any] | None) -> str:
    try:
        return str(parse_flow_params(source_id, params).canonical()["flow_type"])
    except InvalidFlowParams:
        return "INVALID PARAMS"


def sources_list(db: Database) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute(
            """
            SELECT s.source_id, s.source_type, s.is_active, s.batch_execution_params,
                   s.last_modified_date, s.runtime_count, s.locked_by, s.lock_expires_at,
                   r.status AS last_run_status, r.started_at AS last_run_at
              FROM public.source s
              LEFT JOIN LATERAL (
                    SELECT status, started_at FROM public.source_run
                     WHERE source_id = s.source_id ORDER BY started_at DESC LIMIT 1
              ) r ON true
             ORDER BY s.source_id
            """
        )
        rows = [dict(row) for row in cur.fetchall()]
    for row in rows:
        row["flow"] = flow_name(row["source_id"], row.pop("batch_execution_params"))
    return rows


def _unknown_source(source_id: str) -> OperatorError:
    return OperatorError(
        f"unknown source {source_id!r}; `sourceflow sources list` shows the sources"
    )


def source_show(db: Database, source_id: str) -> dict[str, Any]:
    source = get_source(db, source_id)
    if source is None:
        raise _unknown_source(source_id)
    source["flow"] = flow_name(source_id, source["batch_execution_params"])
    with db.transaction() as cur:
        cur.execute(
            """
            SELECT change_id, changed_at, changed_by, reason, from_params, to_params
              FROM public.source_flow_history WHERE source_id = %s
             ORDER BY change_id DESC LIMIT 20
            """,
            (source_id,),
        )
        history = [dict(row) for row in cur.fetchall()]
    return {
        "source": source,
        "runs": runs_list(db, source_id=source_id, limit=SOURCE_SHOW_RUNS),
        "flow_history": history,
    }


# -- flows ------------------------------------------------------------------------------------


def flow_set(
    db: Database,
    source_id: str,
    params: FlowParams,
    *,
    changed_by: str,
    reason: str,
    respecs_tables: frozenset[str],
) -> dict[str, Any]:
    """Write the canonical params; a Re-specs query validation would refuse is refused here,
    with validation's own message, before anything changes."""
    if params.sql is not None:
        check_respecs_query(source_id, params.sql, respecs_tables)
    canonical = params.canonical()
    with db.transaction() as cur:
        if not set_flow_params(cur, source_id, canonical, changed_by=changed_by, reason=reason):
            raise _unknown_source(source_id)
    return {"source_id": source_id, "batch_execution_params": canonical, "changed_by": changed_by}


def allowed_respecs_tables(config: OperatorConfig) -> frozenset[str]:
    return parse_allowed_tables(config.values.get("RESPECS_ALLOWED_TABLES", ""))


# -- runs -------------------------------------------------------------------------------------


def runs_list(
    db: Database,
    *,
    source_id: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute(
            """
            SELECT execution_name, source_id, flow_type, status, window_field, window_start,
                   window_end, lateness_allowance, records, late_records, duplicates_skipped,
                   future_records, bytes, respecs_rows, started_at, finished_at,
                   EXTRACT(EPOCH FROM finished_at - started_at) AS duration_seconds,
                   failed_step, error, error_detail, execution_arn
              FROM public.source_run
             WHERE (%(source)s::text IS NULL OR source_id = %(source)s)
               AND (%(status)s::text IS NULL OR status = %(status)s)
               AND (%(since)s::timestamptz IS NULL OR started_at >= %(since)s)
             ORDER BY started_at DESC LIMIT %(limit)s
            """,
            {"source": source_id, "status": status, "since": since, "limit": limit},
        )
        rows = [dict(row) for row in cur.fetchall()]
    for row in rows:
        if row["duration_seconds"] is not None:
            row["duration_seconds"] = round(float(row["duration_seconds"]), 3)
    return rows


def cancel_run(
    db: Database, callbacks: TaskCallbacks, run: str, *, requested_by: str, reason: str
) -> dict[str, Any]:
    """Ask a running run to stop. The step in progress notices (a download at its next
    heartbeat; a wait for approval at once), stops, and the run ends `cancelled`: source
    unlocked, cursor unchanged."""
    with db.transaction() as cur:
        cur.execute(
            """
            UPDATE public.source_run
               SET cancel_requested_at = now(), cancel_requested_by = %(by)s,
                   cancel_reason = %(reason)s
             WHERE (execution_name = %(run)s OR execution_arn = %(run)s)
               AND status IN %(open)s AND cancel_requested_at IS NULL
            RETURNING execution_arn, execution_name, source_id, status
            """,
            {"run": run, "by": requested_by, "reason": reason, "open": OPEN_RUN_STATUSES},
        )
        row = cur.fetchone()
        if row is not None:
            cancel_waiting(
                cur, callbacks, row["execution_arn"], requested_by=requested_by, reason=reason
            )
        else:
            cur.execute(
                "SELECT status, cancel_requested_by FROM public.source_run"
                " WHERE execution_name = %(run)s OR execution_arn = %(run)s",
                {"run": run},
            )
            found = cur.fetchone()
    if row is not None:
        return dict(row)
    if found is None:
        raise OperatorError(
            f"no run {run!r} in the ledger (it may not have been validated yet); "
            "`sourceflow runs --status running` lists running runs"
        )
    if found["cancel_requested_by"]:
        raise OperatorError(
            f"run {run!r} is already being cancelled by {found['cancel_requested_by']}"
        )
    raise OperatorError(f"run {run!r} has already ended ({found['status']}); nothing to cancel")


def request_run(config: OperatorConfig, db: Database, source_id: str, requested_by: str) -> str:
    """Publish `Run Requested`; returns the event id (which names the execution it starts)."""
    if get_source(db, source_id) is None:
        raise _unknown_source(source_id)
    publish = EventPublisher(config.client("events"), config.require("EVENT_BUS_NAME"))
    return publish(
        "Run Requested",
        {"source_id": source_id, "requested_by": requested_by, "reason": "sourceflow run"},
        correlation_id=f"{source_id}-operator",
    )


def find_requested_execution(
    sfn: Any, state_machine_arn: str, source_id: str, event_id: str
) -> str:
    """The execution the scheduler started for this request (named after the event)."""
    suffix = f"-{requested_run_nonce(event_id)}"
    timeout = REQUESTED_EXECUTION_TIMEOUT_SECONDS
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=state_machine_arn)
        for page in pages:
            for execution in page["executions"]:
                name = execution["name"]
                if name.startswith(f"{source_id}-") and name.endswith(suffix):
                    return str(execution["executionArn"])
        time.sleep(0.3)
    raise OperatorError(
        f"no execution started for the run request of {source_id!r} within {timeout:.0f}s; "
        "is the scheduler running? `sourceflow status` shows its queue and last tick"
    )


@dataclass(frozen=True)
class Progress:
    """One line of a run followed live."""

    at: datetime
    step: str
    detail: str


def follow_execution(sfn: Any, db: Database, execution_arn: str) -> Iterator[Progress]:
    """Each step as the execution enters it, the download's progress while it runs, then the
    outcome; ends when the execution does."""
    seen_events, last_records = 0, None
    deadline = time.monotonic() + FOLLOW_TIMEOUT_SECONDS
    while True:
        events = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
        for event in events[seen_events:]:
            if event["type"].endswith("StateEntered"):
                name = event["stateEnteredEventDetails"]["name"]
                yield Progress(event["timestamp"], name, _waiting_hint(name, execution_arn))
        seen_events = len(events)
        described = sfn.describe_execution(executionArn=execution_arn)
        run = get_run(db, execution_arn)
        progress = (run or {}).get("progress_records")
        if run and run["status"] == "running" and progress not in (None, last_records):
            last_records = progress
            yield Progress(
                datetime.now(UTC),
                "Download",
                f"{run['progress_records']} records, {run['progress_bytes'] or 0} bytes so far",
            )
        if described["status"] != "RUNNING":
            yield Progress(
                described.get("stopDate") or datetime.now(UTC),
                described["status"],
                _outcome(described, run),
            )
            return
        if time.monotonic() > deadline:
            raise OperatorError(
                f"{execution_arn} still running after {FOLLOW_TIMEOUT_SECONDS:.0f}s"
            )
        time.sleep(FOLLOW_POLL_SECONDS)


def _waiting_hint(state: str, execution_arn: str) -> str:
    """What a person must do for a state that waits for one."""
    if state != APPROVE_STEP:
        return ""
    run = execution_arn.rsplit(":", 1)[1]
    return (
        f"waiting for a second person: `sourceflow approve {run}` or "
        f"`sourceflow reject {run} --reason …`"
    )


def _outcome(described: Mapping[str, Any], run: Mapping[str, Any] | None) -> str:
    if described["status"] == "SUCCEEDED":
        if run and run["status"] == "skipped":
            return f"skipped: {run['error']} ({run['error_detail']})"
        if run:
            return (
                f"{run['records']} records, cursor {run['cursor_before']} → {run['cursor_after']}"
            )
        return "succeeded"
    error = (run or {}).get("error") or described.get("error")
    detail = (run or {}).get("error_detail") or described.get("cause") or ""
    return f"{error} in {(run or {}).get('failed_step')}: {detail}".strip()


# -- audit ------------------------------------------------------------------------------------


def audit(db: Database, source_id: str, *, since: datetime | None = None) -> Audit:
    """Whether the source's successful windows cover time with no gap (infra.audit)."""
    # The source first, then its ledger: a run that ends in between is then audited with a
    # cursor from before it moved, which it covers, rather than the other way round.
    source = get_source(db, source_id)
    if source is None:
        raise _unknown_source(source_id)
    with db.transaction() as cur:
        cur.execute(
            f"""
            SELECT {", ".join(LEDGER_COLUMNS)} FROM public.source_run
             WHERE source_id = %(source)s
               AND (%(since)s::timestamptz IS NULL OR started_at >= %(since)s)
            """,
            {"source": source_id, "since": since},
        )
        ledger = [LedgerRun.from_row(row) for row in cur.fetchall()]
    return audit_ledger(
        source_id,
        ledger,
        cursor=source["last_modified_date"],
        lateness_allowance=source["lateness_allowance"],
        since=since,
    )


# -- status -----------------------------------------------------------------------------------


def status(config: OperatorConfig, db: Database) -> dict[str, Any]:
    sqs, sfn, names = config.client("sqs"), config.client("stepfunctions"), config.names
    queues = []
    for service in SERVICES:
        queued, in_flight = _depths(
            sqs,
            names.queue(service),
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        )
        (dead_letters,) = _depths(sqs, names.dlq(service), "ApproximateNumberOfMessages")
        queues.append(
            {
                "service": service,
                "queued": queued,
                "in_flight": in_flight,
                "dead_letters": dead_letters,
            }
        )
    running = [
        {"execution_name": execution["name"], "started": execution["startDate"]}
        for page in sfn.get_paginator("list_executions").paginate(
            stateMachineArn=config.require("STATE_MACHINE_ARN"), statusFilter="RUNNING"
        )
        for execution in page["executions"]
    ]
    with db.transaction() as cur:
        cur.execute(
            """
            SELECT source_id, locked_by, lock_expires_at, lock_expires_at < now() AS lease_expired
              FROM public.source WHERE locked_by IS NOT NULL ORDER BY source_id
            """
        )
        locked = [dict(row) for row in cur.fetchall()]
        cur.execute("SELECT rule, last_tick_at, handled_at FROM public.scheduler_tick")
        ticks = [dict(row) for row in cur.fetchall()]
    return {"queues": queues, "running": running, "locked": locked, "scheduler_ticks": ticks}


def _depths(sqs: Any, queue_name: str, *attributes: str) -> tuple[int, ...]:
    """The queue's counts named by `attributes`, in their order, from one request."""
    url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(attributes))["Attributes"]
    return tuple(int(found[attribute]) for attribute in attributes)

"""Least privilege, proven by running under it: on a stack of its own with IAM enforced
(StackOptions.least_privilege, local/iam.py), each service's workers sign as a user holding
exactly its FunctionRole policy from service.yaml and the state machine's calls are checked
against its StateMachineRole policy from workflow.yaml. Every flow, on every source type, and a
failing run pass with no call denied; a policy without an action a run needs fails that run,
the denial named; and what the policies grant that nothing here used is the list that
docs/deploy.md gives (Least privilege, proven)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg2.extensions import make_dsn

from infra.resources import SERVICES
from infra.templates.rendering import as_list
from local.iam import OPERATOR_USER, STATE_MACHINE_USER, put_policy, service_user, unexercised
from local.stack import LocalStack, aws_client
from shared.store.db import Database
from tests.builders import listing, sold_listing
from tests.e2e.harness import Harness, RunResult, Vendor, wait_for
from tests.e2e.harness.approvals import SQM, respecs_source, waiting_for_approval
from tests.e2e.harness.backfills import next_slice
from tests.e2e.harness.source_types import CsvDrops, PartnerTable, SourceData, new_source
from tests.e2e.harness.stack import stack_options
from tests.e2e.harness.workflow_runs import ALICE, a_file, ended

DAY = timedelta(days=1)
SERVICES_AND_STATE_MACHINE = (*map(service_user, SERVICES), STATE_MACHINE_USER)
_LAMBDA_RUNTIME = "Lambda's runtime writes the function's logs and traces, not its code"
_DATABASE_URL = "the embedded stack's workers are given DATABASE_URL, not the secret"
_STEP_FUNCTIONS = "Step Functions' own execution logs and traces, which moto does not write"
_RETRIED = "stretching a failed delivery's visibility (backoff): no delivery of it fails here"
_SQL_TARGET_DSN = "the embedded stack's sql target is a DSN (WORKFLOW_SQL_TARGETS), not a secret"
# What the policies grant that this tier does not use, and why: whole statements by
# (principal, Sid), single actions by (principal, Sid, action). Every other granted action must
# be used by some call of the tier (docs/deploy.md, Least privilege, proven).
STATEMENTS_NOT_EXERCISED = {
    **{
        (service_user(service), sid): why
        for service in SERVICES
        for sid, why in (
            ("WriteOwnLog", _LAMBDA_RUNTIME),
            ("WriteTraces", _LAMBDA_RUNTIME),
            ("ReadDatabaseSecret", _DATABASE_URL),
        )
    },
    (service_user("tasks"), "ReadSqlTargetSecrets"): _SQL_TARGET_DSN,
    (STATE_MACHINE_USER, "WriteTraces"): _STEP_FUNCTIONS,
    (STATE_MACHINE_USER, "DeliverExecutionLogs"): _STEP_FUNCTIONS,
}
ACTIONS_NOT_EXERCISED = {
    (service_user(service), "ConsumeOwnQueue", action): _RETRIED
    for service in ("unlocking", "scheduler", "tasks")
    for action in ("sqs:ChangeMessageVisibility", "sqs:GetQueueUrl")
}


def why_not_exercised(principal: str, sid: str, action: str) -> str | None:
    return STATEMENTS_NOT_EXERCISED.get((principal, sid)) or ACTIONS_NOT_EXERCISED.get(
        (principal, sid, action)
    )


@dataclass
class Played:
    """The runs of every flow under enforcement, by what they were."""

    results: dict[str, RunResult]
    alerts: dict[str, list[str]]  # each failing run's, by the step it failed in
    workflows: dict[str, dict[str, Any]]  # `workflow show` of each workflow run, by its case


@pytest.fixture(scope="module")
def enforced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """A stack of this module's own, with IAM enforced and its own PostgreSQL."""
    options = replace(
        stack_options(tmp_path_factory.mktemp("least-privilege")),
        database_url=None,
        least_privilege=True,
    )
    with LocalStack(options) as stack:
        db = Database(stack.env["DATABASE_URL"], application_name="sourceflow-tests")
        try:
            yield Harness(
                stack=stack,
                db=db,
                aws=lambda name: aws_client(stack.env, name),
                vendor=Vendor(stack.env["VENDOR_URL"]),
            )
        finally:
            db.close()


@pytest.fixture(scope="module")
def played(enforced: Harness) -> Played:
    harness, now = enforced, datetime.now(UTC)
    results = {
        "normal, requested": requested_run(harness),
        **{kind.source_type: normal_run(harness, kind) for kind in (CsvDrops, PartnerTable)},
        "full load, scheduled": scheduled_full_load(harness),
        "backfill": backfill_slice(harness, now),
        "sold": sold_run(harness, now),
        "re-specs, approved": approved_respecs(harness),
    }
    failing = {
        "Validate": respecs_source(harness, "UPDATE public.listing_attributes SET value = 'x'")[0],
        "Validate, retried": unreachable_table(harness),
        "Download": unavailable_source(harness),
        "Unlock": respecs_source(harness, NO_SUCH_COLUMN)[0],
    }
    alerts = {}
    for step, source_id in failing.items():
        results[f"failing in {step}"] = harness.run(source_id)
        # (one at a time: reading the alerts deletes those about other sources too)
        alerts[step] = wait_for(
            lambda: harness.alerts_about(source_id),  # noqa: B023 (waited for here)
            f"an alert about {source_id}",
        )
    return Played(results, alerts, workflow_runs(harness))


def workflow_runs(harness: Harness) -> dict[str, dict[str, Any]]:
    """A workflow whose sql task succeeds, then notifies; and one whose sql task fails, whose
    recovery notifies and whose run alerts: the tasks service's calls, and the workflow
    machines' sends to its queue."""
    shown = {}
    for case, query in (("succeeding", "SELECT 1"), ("failing", "SELECT 1 / 0")):
        name = f"lp_{case}"
        applied = harness.sourceflow(
            "apply", str(a_file(harness.stack.options.state_dir, name, query=query))
        )
        assert applied.returncode == 0, applied.stderr
        started = harness.sourceflow("workflow", "run", name, "--json", person=ALICE)
        assert started.returncode == 0, started.stderr
        shown[case] = ended(harness, json.loads(started.stdout)["run"])
    return shown


NO_SUCH_COLUMN = (
    "UPDATE public.listing_attributes SET value = 'sqm', no_such_column = 1"
    " WHERE source_id = '{source}'"
)


def unavailable_source(harness: Harness) -> str:
    """A source whose vendor answers 500 to every page: each delivery of its download fails
    and is retried, the last reports the failure."""
    dataset = harness.new_dataset([DAY])
    harness.vendor.fault(dataset, fail_status=500, after_records=0)
    return harness.new_source(dataset, cursor=datetime.now(UTC) - 2 * DAY, runtime_count=3)


def unreachable_table(harness: Harness) -> str:
    """A postgres source on a port nothing listens on: validation's check of it fails, and each
    delivery is retried after its backoff until the last reports it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    data = PartnerTable(harness, harness.unique_name())
    connection = {**data.connection(), "dsn": make_dsn(harness.partner.reader_dsn, port=dead_port)}
    return harness.new_source(data.name, source_type="postgres", connection=connection)


def requested_run(harness: Harness) -> RunResult:
    """`sourceflow run request`: the scheduler starts it from the Run Requested event."""
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    asked = harness.sourceflow("run", "request", source_id)
    assert asked.returncode == 0, asked.stderr
    [execution] = harness.wait_for_executions(source_id, 1)
    return harness.finish(execution["executionArn"], source_id)


def normal_run(harness: Harness, kind: type[SourceData]) -> RunResult:
    """A first run of a source of `kind` (an s3_files or a postgres one) loading one record."""
    data = kind(harness, harness.unique_name())
    data.put([listing(data.name, 0, datetime.now(UTC) - DAY)])
    return harness.run(new_source(harness, data))


def scheduled_full_load(harness: Harness) -> RunResult:
    """A Full Load the schedule starts; the next tick resets the flow to Normal."""
    source_id = harness.new_source(
        harness.new_dataset([DAY]), runtime_count=3, params={"type": "Full Load"}
    )
    harness.set_schedule(source_id, interval="1 minute")
    harness.tick()
    [execution] = harness.wait_for_executions(source_id, 1)
    result = harness.finish(execution["executionArn"], source_id)
    harness.tick()
    return result


def backfill_slice(harness: Harness, now: datetime) -> RunResult:
    source_id = harness.new_source(harness.new_dataset([3 * DAY]), runtime_count=3)
    day = (now - 4 * DAY).strftime("%Y-%m-%dT00:00:00")
    until = (now - 3 * DAY).strftime("%Y-%m-%dT00:00:00")
    asked = harness.sourceflow(
        "backfill", "request", source_id, "--from", day, "--to", until, "--slice", "1d"
    )
    assert asked.returncode == 0, asked.stderr
    return next_slice(harness, source_id)


def sold_run(harness: Harness, now: datetime) -> RunResult:
    dataset = harness.new_dataset([])
    harness.vendor.put(dataset, [sold_listing(dataset, 1, now - DAY)])
    source_id = harness.new_source(dataset, runtime_count=3, params={"type": "Sold"})
    return harness.run(source_id)


def approved_respecs(harness: Harness) -> RunResult:
    """A Re-specs query that waits for a second person, who approves it."""
    harness.stack.redeploy("validation", {"RESPECS_APPROVAL_REQUIRED": "true"})
    try:
        source_id, _, _ = respecs_source(harness, SQM)
        arn = harness.start(source_id)
        waiting_for_approval(harness, arn)
        approved = harness.sourceflow("approve", arn.rsplit(":", 1)[1], person="bob")
        assert approved.returncode == 0, approved.stderr
        return harness.finish(arn, source_id)
    finally:
        harness.stack.redeploy("validation", {"RESPECS_APPROVAL_REQUIRED": "false"})


def denied(harness: Harness, since: int = 0) -> list[str]:
    return [
        str(decision) for decision in harness.stack.decisions.read()[since:] if not decision.allowed
    ]


def test_every_flow_and_a_failing_run_pass_with_no_call_denied(
    enforced: Harness, played: Played
) -> None:
    # Given every flow played on the enforcing stack (the `played` fixture)
    # Then each ran as it does without enforcement
    outcomes = {name: (result.status, result.error) for name, result in played.results.items()}
    assert outcomes == {
        **dict.fromkeys(outcomes, ("SUCCEEDED", None)),
        "failing in Validate": ("FAILED", "InvalidRespecsQuery"),
        "failing in Validate, retried": ("FAILED", "SourceUnreachable"),
        "failing in Download": ("FAILED", "SourceUnavailable"),
        "failing in Unlock": ("FAILED", "RespecsQueryFailed"),
    }, {name: result.run.get("error_detail") for name, result in played.results.items()}
    assert played.results["re-specs, approved"].run["respecs_rows"] == 2
    assert played.results["backfill"].run["flow_type"] == "backfill"
    assert played.results["sold"].run["records"] == 1
    assert (
        played.results["s3_files"].run["records"] == played.results["postgres"].run["records"] == 1
    )
    # and people were alerted of each failure (the state machine's sns:Publish)
    assert all(played.alerts.values()), played.alerts
    # and the workflows' tasks ran as they do without enforcement
    assert {
        case: {task["task"]: task["status"] for task in shown["tasks"]}
        for case, shown in played.workflows.items()
    } == {
        "succeeding": {"count": "succeeded", "say": "succeeded", "recover": "skipped"},
        "failing": {"count": "failed", "say": "skipped", "recover": "succeeded"},
    }
    # And no call of any service, the state machine or the operator was denied
    assert denied(enforced) == []
    # and each principal's calls were checked (a principal missing here signed as another)
    principals = {decision.principal for decision in enforced.stack.decisions.read()}
    assert {*SERVICES_AND_STATE_MACHINE, OPERATOR_USER} <= principals


def test_every_permission_granted_is_used(enforced: Harness, played: Played) -> None:
    # Given the policies the stack's principals hold, and every call the flows made
    stack = enforced.stack
    policies = stack.iam_resources.policies()

    # When what they grant is set against what was used
    unused = unexercised(policies, stack.decisions.read())

    # Then nothing is granted that no call needs, but what NOT_EXERCISED says why
    found = {
        (principal, grant.sid, grant.action): grant.resources
        for principal, grants in unused.items()
        for grant in grants
    }
    (stack.options.state_dir / "unexercised.json").write_text(
        json.dumps([[*key, why_not_exercised(*key)] for key in sorted(found)], indent=1)
    )
    needless = {key: resources for key, resources in found.items() if not why_not_exercised(*key)}
    assert needless == {}, (
        "granted but used by no call of this tier: take it out of the template, or list it in "
        "STATEMENTS_ or ACTIONS_NOT_EXERCISED with why (and in docs/deploy.md, Least privilege)"
    )
    # and what those list is still granted, and still unused
    listed = {key[:2] for key in found} | set(found)
    assert not set(STATEMENTS_NOT_EXERCISED) - listed, set(STATEMENTS_NOT_EXERCISED) - listed
    assert not set(ACTIONS_NOT_EXERCISED) - listed, set(ACTIONS_NOT_EXERCISED) - listed


def test_a_policy_without_an_action_a_run_needs_fails_the_run_naming_the_denial(
    enforced: Harness, played: Played
) -> None:
    # Given download's policy from service.yaml without s3:PutObject
    stack = enforced.stack
    policy = stack.iam_resources.service_policy("download")
    statements = [
        {**statement, "Action": [a for a in as_list(statement["Action"]) if a != "s3:PutObject"]}
        for statement in policy["Statement"]
    ]
    without = {**policy, "Statement": [s for s in statements if s["Action"]]}
    iam = enforced.aws("iam")
    put_policy(iam, service_user("download"), without)
    since = len(stack.decisions.read())
    try:
        # When a run downloads its records
        source_id = enforced.new_source(enforced.new_dataset([DAY]), runtime_count=3)
        result = enforced.run(source_id)
    finally:
        put_policy(iam, service_user("download"), policy)

    # Then it fails in Download, and the denial names the principal and the action
    assert (result.status, result.run["failed_step"]) == ("FAILED", "Download"), result
    refused = denied(enforced, since)
    assert refused, "nothing was denied"
    assert {line.split(" on ")[0] for line in refused} == {
        "sourceflow-download DENIED s3:PutObject"
    }
    assert f"arn:aws:s3:::{stack.env['RAW_BUCKET']}/{source_id}/" in refused[0]
    assert "AccessDenied" in (result.run["error_detail"] or ""), result.run

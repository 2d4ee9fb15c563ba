"""The moto server with IAM enforced as AWS would enforce it on sourceflow's calls, for the
embedded stack's least-privilege tier (StackOptions.least_privilege).

Run as `python -m local.moto_iam DECISIONS -H 127.0.0.1 -p PORT`. Before serving it:

- creates the two principals whose access keys are fixed: the stack's operator (the key
  `local` that local.env and the tests sign with; every action on every resource), and the
  state machine's (moto's interpreter signs its SQS, EventBridge and SNS calls with the key
  `ak`; no policy until the stack gives it the StateMachineRole's, local/iam.py);
- bridges two ways moto's authorization differs from AWS's on the calls sourceflow makes:
  moto checks Step Functions, EventBridge, Secrets Manager and SNS calls against the resource
  `*`, so a policy that names its resource, as ours do, would be refused: here they are checked
  against the resource AWS checks (the state machine, the bus, the secret, the topic); so are
  SQS's GetQueueUrl and CreateQueue, which name their queue by name, not URL. And it names
  SQS's batch actions by themselves (`sqs:DeleteMessageBatch`), where AWS authorizes them as
  the single action (`sqs:DeleteMessage`);
- records every decision, one JSON line each, in the file DECISIONS: who, which action, on
  what, allowed or not. The stack reads denials and what each principal used from it.

Not bridged, and so not tested here: trust policies (who may assume a role: each principal is
a user signing with its own key) and resource policies (the queue and topic policies the rules
deliver through; moto's EventBridge delivers in-process, unchecked).
Enforcement itself starts when the stack posts `0` to `/moto-api/reset-auth`, after it has
provisioned everything as the operator.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from moto import server
from moto.core import DEFAULT_ACCOUNT_ID
from moto.events.responses import EventsHandler
from moto.iam.access_control import IAMRequestBase
from moto.iam.models import iam_backends
from moto.secretsmanager.models import secretsmanager_backends
from moto.secretsmanager.responses import SecretsManagerResponse
from moto.sns.responses import SNSResponse
from moto.sqs.responses import SQSResponse
from moto.stepfunctions.responses import StepFunctionResponse

from local.iam import OPERATOR_USER, STATE_MACHINE_USER
from local.stack import LOCAL_CREDENTIALS

OPERATOR_KEY = (LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"], LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
STATE_MACHINE_KEY = ("ak", "sk")  # what moto's state-machine interpreter signs with
ALLOW_EVERYTHING = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
# AWS authorizes a batch call as its single action (the service authorization reference lists
# no permission of the batch's own); moto names the batch.
AUTHORIZED_AS = {
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "sqs:SendMessageBatch": "sqs:SendMessage",
}
PARTITION = "aws"


def fixed_principal(user_name: str, key: tuple[str, str], policy: dict[str, Any] | None) -> None:
    """An IAM user whose access key is `key` (IAM makes up its own keys; these are given)."""
    backend = iam_backends[DEFAULT_ACCOUNT_ID][PARTITION]
    backend.create_user(region_name="us-east-1", user_name=user_name)
    access_key = backend.create_access_key(user_name)
    del backend.access_keys[access_key.physical_resource_id]
    access_key.access_key_id, access_key.secret_access_key = key
    backend.access_keys[access_key.physical_resource_id] = access_key
    if policy is not None:
        backend.put_user_policy(user_name, "everything", json.dumps(policy))


class DecisionLog:
    """Every authorization decision, appended to a file as one JSON line."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def record(self, principal: str, action: str, resource: str, allowed: bool) -> None:
        line = json.dumps(
            {"principal": principal, "action": action, "resource": resource, "allowed": allowed}
        )
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
        if not allowed:
            print(f"DENIED {principal} {action} on {resource}", flush=True)


def record_decisions(log: DecisionLog) -> None:
    checked = IAMRequestBase.check_action_permitted

    def check_and_record(request: IAMRequestBase, resource: str) -> None:
        request._action = AUTHORIZED_AS.get(request._action, request._action)
        principal = request._access_key.arn.rsplit("/", 1)[-1]
        try:
            checked(request, resource)
        except Exception:
            log.record(principal, request._action, resource, allowed=False)
            raise
        log.record(principal, request._action, resource, allowed=True)

    IAMRequestBase.check_action_permitted = check_and_record  # type: ignore[method-assign,assignment]


# -- the resources AWS checks, where moto checks "*" ----------------------------------------


def _state_machine_resource(response: Any) -> str:
    """StartExecution: the state machine (Step Functions authorizes a call through an alias or
    a version by the state machine's ARN too, so the cloud's start through its live alias needs
    the same grant); DescribeExecution and the like: the execution; SendTask*: the state machine
    whose execution issued the token."""
    for name in ("stateMachineArn", "executionArn"):
        arn = response._get_param(name)
        if arn:
            return str(arn)
    token = response._get_param("taskToken")
    if token:
        for state_machine in response.stepfunction_backend.state_machines:
            if any(_holds(execution, token) for execution in state_machine.executions):
                return str(state_machine.arn)
    return "*"


def _holds(execution: Any, token: str) -> bool:
    worker = getattr(execution, "exec_worker", None)
    return worker is not None and worker.env.callback_pool_manager.get(token) is not None


def _event_bus_resource(response: Any) -> str:
    """PutEvents: the bus its entries go to (one bus per call, as sourceflow puts them)."""
    entries = response._get_param("Entries") or []
    buses = {entry.get("EventBusName") or "default" for entry in entries}
    if len(buses) != 1:
        return "*"
    [bus] = buses
    if bus.startswith("arn:"):
        return str(bus)
    return f"arn:{PARTITION}:events:{response.region}:{response.current_account}:event-bus/{bus}"


def _secret_resource(response: Any) -> str:
    """The secret's full ARN; for one that does not exist, the ARN its name would have (AWS
    checks the caller may read it before it says there is no such secret)."""
    secret_id = response._get_param("SecretId") or response._get_param("Name")
    if not secret_id:
        return "*"
    backend = secretsmanager_backends[response.current_account][response.region]
    secret = backend.secrets.get(secret_id)
    if secret is not None:
        return str(secret.arn)
    if secret_id.startswith("arn:"):
        return str(secret_id)
    return (
        f"arn:{PARTITION}:secretsmanager:{response.region}:{response.current_account}"
        f":secret:{secret_id}"
    )


_queue_named_by_url = SQSResponse._determine_resource


def _queue_resource(response: Any) -> str:
    """GetQueueUrl and CreateQueue name the queue, not its URL: moto checks them against `*`."""
    name = response._get_param("QueueName")
    if not name:
        return _queue_named_by_url(response)
    account = response._get_param("QueueOwnerAWSAccountId") or response.current_account
    return f"arn:{PARTITION}:sqs:{response.region}:{account}:{name}"


def _topic_resource(response: Any) -> str:
    return str(response._get_param("TopicArn") or "*")


def bridge_resources() -> None:
    StepFunctionResponse._determine_resource = _state_machine_resource  # type: ignore[attr-defined]
    EventsHandler._determine_resource = _event_bus_resource  # type: ignore[attr-defined]
    SecretsManagerResponse._determine_resource = _secret_resource  # type: ignore[attr-defined]
    SNSResponse._determine_resource = _topic_resource  # type: ignore[attr-defined]
    SQSResponse._determine_resource = _queue_resource  # type: ignore[method-assign,assignment]


def main(argv: list[str]) -> None:
    decisions, server_argv = Path(argv[0]), argv[1:]
    fixed_principal(OPERATOR_USER, OPERATOR_KEY, ALLOW_EVERYTHING)
    fixed_principal(STATE_MACHINE_USER, STATE_MACHINE_KEY, None)
    bridge_resources()
    record_decisions(DecisionLog(decisions))
    server.main(server_argv)


if __name__ == "__main__":
    main(sys.argv[1:])

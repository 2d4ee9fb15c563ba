"""Least privilege on the embedded stack: every service's worker signs as an IAM user holding
exactly its FunctionRole policy, and the state machine's calls are checked against its
StateMachineRole policy, both rendered from the cloud's templates (infra/templates/rendering.py)
with the embedded stack's ARNs filled in. The moto server enforces them (local/moto_iam.py) and
records every decision; `Decisions` reads that record back: what was denied, and which granted
permissions nothing used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import requests

from infra.resources import SERVICES, Names
from infra.templates import WORKFLOW
from infra.templates.rendering import Account, Grant, Rendered, policy_grants, role_policy

# The moto server's account (its default), in the stack's region.
LOCAL_ACCOUNT = Account("us-east-1", "123456789012")
# The principals local/moto_iam.py creates with fixed keys: the operator's (local.env's key,
# the stack's own provisioning, the tests and the `sourceflow` command) and the state machine's.
OPERATOR_USER = "sourceflow-operator"
STATE_MACHINE_USER = "sourceflow-state-machine"
SERVICE_ROLE, STATE_MACHINE_ROLE = "FunctionRole", "StateMachineRole"
POLICY_NAME = "template"


def service_user(service: str) -> str:
    return f"sourceflow-{service}"


@dataclass(frozen=True)
class LocalResources:
    """The embedded stack's resources by the names the templates give them."""

    names: Names
    drops_bucket: str  # the partner's file drops, which s3_files sources read

    def _arn(self, service: str, resource: str) -> str:
        account = LOCAL_ACCOUNT
        return f"arn:{account.partition}:{service}:{account.region}:{account.account_id}:{resource}"

    def queue_arn(self, service: str) -> str:
        return self._arn("sqs", self.names.queue(service))

    def ssm_parameters(self) -> dict[str, str]:
        """The SSM parameters the core and service stacks publish, as the cloud would hold
        them for this stack. The embedded stack has no database secret (its workers get
        DATABASE_URL): the ARN stands for the one a deployed stage would have."""
        names = self.names
        core = {
            "database-secret-arn": self._arn("secretsmanager", f"secret:{names.prefix}-database"),
            "raw-bucket-name": names.raw_bucket,
            "event-bus-arn": self._arn("events", f"event-bus/{names.event_bus}"),
            "alerts-topic-arn": self._arn("sns", names.alerts_topic),
            "notifications-topic-arn": self._arn("sns", names.notifications_topic),
        }
        return {
            **{names.parameter("core", key): value for key, value in core.items()},
            **{names.parameter(s, "queue-arn"): self.queue_arn(s) for s in SERVICES},
        }

    def service_policy(self, service: str) -> dict[str, Any]:
        """The service's FunctionRole policy from service.yaml, as the embedded stack needs it
        (with the partner's drops as the sources' objects it may read)."""
        drops = f"arn:{LOCAL_ACCOUNT.partition}:s3:::{self.drops_bucket}"
        rendered = Rendered(
            "service",
            LOCAL_ACCOUNT,
            Stage=self.names.stage,
            Service=service,
            CodeBucket="local",
            CodeKey="local",
            SourceReadArns=f"{drops},{drops}/*",
        )
        log_group = self._arn("logs", f"log-group:{self.names.log_group(service)}:*")
        return role_policy(
            rendered,
            SERVICE_ROLE,
            attributes={"FunctionLogGroup.Arn": log_group, "Queue.Arn": self.queue_arn(service)},
            parameters=self.ssm_parameters(),
        )

    def state_machine_policy(self) -> dict[str, Any]:
        rendered = Rendered(WORKFLOW, LOCAL_ACCOUNT, Stage=self.names.stage)
        return role_policy(
            rendered, STATE_MACHINE_ROLE, attributes={}, parameters=self.ssm_parameters()
        )

    def policies(self) -> dict[str, dict[str, Any]]:
        """Each principal's policy, by its user name."""
        return {
            **{service_user(s): self.service_policy(s) for s in SERVICES},
            STATE_MACHINE_USER: self.state_machine_policy(),
        }


def put_policy(iam: Any, user: str, document: Mapping[str, Any]) -> None:
    """Give `user` exactly `document` (it replaces the one it had)."""
    iam.put_user_policy(UserName=user, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(document))


def grant_least_privilege(iam: Any, resources: LocalResources) -> dict[str, dict[str, str]]:
    """Each service's user with its policy and an access key, and the state machine's policy;
    returns each service's credentials, as its workers' environment."""
    credentials = {}
    for principal, document in resources.policies().items():
        if principal != STATE_MACHINE_USER:  # local/moto_iam.py made it, with moto's key
            iam.create_user(UserName=principal)
        put_policy(iam, principal, document)
    for service in SERVICES:
        key = iam.create_access_key(UserName=service_user(service))["AccessKey"]
        credentials[service] = {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
    return credentials


def enforce(endpoint: str) -> None:
    """Every request from now on is authorized (moto counts none as free any more)."""
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()


@dataclass(frozen=True)
class Decision:
    principal: str
    action: str
    resource: str
    allowed: bool

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else "DENIED"
        return f"{self.principal} {verdict} {self.action} on {self.resource}"


@dataclass(frozen=True)
class Decisions:
    """What the enforcing moto server decided (local/moto_iam.py's record)."""

    path: Path

    def read(self) -> list[Decision]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [Decision(**json.loads(line)) for line in lines if line]

    def denied(self) -> list[Decision]:
        return [decision for decision in self.read() if not decision.allowed]


def unexercised(
    policies: Mapping[str, Mapping[str, Any]], decisions: Iterable[Decision]
) -> dict[str, list[Grant]]:
    """Per principal, each action its policy grants that no allowed call used on any of the
    resources the statement names."""
    used: dict[str, set[tuple[str, str]]] = {}
    for decision in decisions:
        if decision.allowed:
            used.setdefault(decision.principal, set()).add((decision.action, decision.resource))
    return {
        principal: [
            grant
            for grant in policy_grants(document)
            if not any(
                action == grant.action and fnmatchcase(resource, pattern)
                for action, resource in used.get(principal, set())
                for pattern in grant.resources
            )
        ]
        for principal, document in policies.items()
    }

"""The policies the least-privilege tier runs under (local/iam.py): rendered from the cloud's
templates with the embedded stack's ARNs, refused by name where the stack has no value for what
a template names, and set against the calls that used them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.resources import SERVICES, Names
from infra.templates.rendering import Grant, Rendered, TemplateError, policy_grants, role_policy
from local.iam import (
    LOCAL_ACCOUNT,
    STATE_MACHINE_USER,
    Decision,
    LocalResources,
    service_user,
    unexercised,
)

RESOURCES = LocalResources(Names("local"), "drops")


def grants_of(document: dict[str, object]) -> dict[str, set[str]]:
    by_sid: dict[str, set[str]] = {}
    for grant in policy_grants(document):  # type: ignore[arg-type]
        by_sid.setdefault(grant.sid, set()).update(grant.resources)
    return by_sid


def test_every_policy_names_the_embedded_stacks_resources_and_nothing_unresolved() -> None:
    policies = RESOURCES.policies()

    assert set(policies) == {*map(service_user, SERVICES), STATE_MACHINE_USER}
    for principal, document in policies.items():
        text = json.dumps(document)
        assert "{{resolve" not in text and "${" not in text and "Fn::" not in text, principal
        for grant in policy_grants(document):
            for resource in grant.resources:
                assert resource == "*" or resource.startswith("arn:aws:"), (principal, grant)
    download = grants_of(policies[service_user("download")])
    assert download["WriteRawObjects"] == {"arn:aws:s3:::sourceflow-local-raw/*"}
    assert download["ConsumeOwnQueue"] == {
        "arn:aws:sqs:us-east-1:123456789012:sourceflow-local-download"
    }
    assert download["ReadSourceObjects"] == {"arn:aws:s3:::drops", "arn:aws:s3:::drops/*"}
    state_machine = grants_of(policies[STATE_MACHINE_USER])
    assert state_machine["SendTasks"] == {
        f"arn:aws:sqs:us-east-1:123456789012:sourceflow-local-{service}"
        # and the workflows' machines, created with the run machine's role, send to tasks
        for service in ("validation", "download", "unlocking", "tasks")
    }


def test_a_policy_naming_what_the_stack_has_no_value_for_is_refused_by_name() -> None:
    rendered = Rendered(
        "service", LOCAL_ACCOUNT, Stage="local", Service="download", CodeBucket="b", CodeKey="k"
    )
    attributes = {"FunctionLogGroup.Arn": "a", "Queue.Arn": "q"}
    with pytest.raises(TemplateError, match=r"'/sourceflow/local/core/database-secret-arn'.*give"):
        role_policy(rendered, "FunctionRole", attributes=attributes, parameters={})
    with pytest.raises(TemplateError, match=r"service.yaml FunctionRole names 'Queue.Arn'"):
        role_policy(
            rendered,
            "FunctionRole",
            attributes={"FunctionLogGroup.Arn": "a"},
            parameters=RESOURCES.ssm_parameters(),
        )


def test_what_no_allowed_call_used_is_unexercised() -> None:
    policies: dict[str, dict[str, Any]] = {
        "p": {
            "Statement": [
                {"Sid": "S", "Effect": "Allow", "Action": ["a", "b"], "Resource": ["arn:x/*"]},
                {"Sid": "T", "Effect": "Allow", "Action": "c", "Resource": "*"},
            ]
        },
        "q": {"Statement": [{"Sid": "U", "Effect": "Allow", "Action": "a", "Resource": "arn:y"}]},
    }
    decisions = [
        Decision("p", "a", "arn:x/1", allowed=True),
        Decision("p", "b", "arn:x/1", allowed=False),  # denied: not a use
        Decision("p", "c", "anything", allowed=True),
        Decision("q", "a", "arn:x/1", allowed=True),  # another resource than q's
    ]

    assert unexercised(policies, decisions) == {
        "p": [Grant("S", "b", ("arn:x/*",))],
        "q": [Grant("U", "a", ("arn:y",))],
    }

"""The cloud templates keep sourceflow's rules, and do not drift from the embedded stack.

Each template is rendered the way CloudFormation would for a stage (and, for the service
template, for each service; infra/templates/rendering.py): parameters, conditions, mappings and
`!Sub` resolved, resource references and SSM dynamic references left as they are. The embedded
stack's provisioning runs against a recorder of its AWS calls, so both sides are compared as data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from console.settings import REQUIRED, from_env
from infra import statemachine, templates
from infra.deploy import DEPLOY_ORDER, MIGRATE
from infra.resources import (
    LIVE_ALIAS,
    NOTIFICATION_DETAIL_TYPES,
    SCHEDULE_RULES,
    SCHEDULER_COMMAND_DETAIL_TYPES,
    SERVICES,
    TASKS_DETAIL_TYPES,
    Names,
)
from infra.templates import rendering
from infra.templates.rendering import SSM_REFERENCE, Account, as_list
from local.provision import BATCH_SIZE, function_timeouts, provision
from local.stack import LOCAL_TIMEOUTS, admission_environment, timeouts_environment
from services.download.settings import GZIP_LEVELS
from services.scheduler.service import SOURCES_OVERDUE_METRIC
from shared.connectors.http_api import REQUEST_TIMEOUT
from shared.runtime.catalogue import (
    CLOUD_TIMEOUTS,
    DOWNLOAD_BATCH_SIZE,
    DOWNLOAD_CONCURRENCY,
    EVENT_SOURCE,
    RAW_GZIP_LEVEL,
    RESPECS_APPROVAL_REQUIRED,
    RESPECS_STATEMENT_TIMEOUT_MS,
    VENDOR_MAX_WAIT_SECONDS,
    VENDOR_SLOT_WAIT_SECONDS,
    Step,
    Timeouts,
)
from shared.runtime.observability import NAMESPACE
from shared.runtime.secrets import connection_secrets_prefix
from shared.runtime.settings import SettingsError

STAGE = "t1"
NAMES = Names(STAGE)
REGION, ACCOUNT = "eu-west-1", "123456789012"
WHERE = Account(REGION, ACCOUNT)
STATE_MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{NAMES.state_machine}"
LIVE_STATE_MACHINE_ARN = NAMES.state_machine_alias_arn(REGION, ACCOUNT)
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# Actions AWS authorizes only on "*"; any other action must name its resource.
ONLY_ON_EVERY_RESOURCE = frozenset(
    {
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        "logs:CreateLogDelivery",
        "logs:GetLogDelivery",
        "logs:UpdateLogDelivery",
        "logs:DeleteLogDelivery",
        "logs:ListLogDeliveries",
        "logs:PutResourcePolicy",
        "logs:DescribeResourcePolicies",
        "logs:DescribeLogGroups",
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
        "cloudwatch:DescribeAlarms",
    }
)


# -- each stack rendered as CloudFormation would (infra/templates/rendering.py) ------------


class Rendered(rendering.Rendered):
    """A template rendered for a stack in the tests' account and region (WHERE)."""

    def __init__(self, name: str, **parameters: str) -> None:
        super().__init__(name, WHERE, **parameters)


CORE_APPROVAL_TIMEOUT = templates.load("core")["Parameters"]["ApprovalTimeoutSeconds"]["Default"]


def core() -> Rendered:
    return Rendered(
        "core",
        Stage=STAGE,
        DatabaseSecretArn=f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:db-AbCdEf",
    )


def service(name: str, **parameters: str) -> Rendered:
    return Rendered("service", Stage=STAGE, Service=name, CodeBucket="b", CodeKey="k", **parameters)


def workflow() -> Rendered:
    return Rendered("workflow", Stage=STAGE)


def every_rendering() -> Iterator[Rendered]:
    yield core()
    for name in SERVICES:
        yield service(name)
        # the optional grants too: a VPC, (download) source objects, the stage's key
        yield service(
            name,
            SubnetIds="subnet-1",
            SecurityGroupIds="sg-1",
            SourceReadArns="arn:aws:s3:::drops/*",
            KmsKeyArn=KEY,
        )
    yield workflow()
    yield Rendered("workflow", Stage=STAGE, KmsKeyArn=KEY)
    yield console_stack()
    yield console_stack(SubnetIds="subnet-1", SecurityGroupIds="sg-1", KmsKeyArn=KEY)


def console_stack(**parameters: str) -> Rendered:
    return Rendered(
        "console",
        Stage=STAGE,
        CodeBucket="b",
        CodeKey="k",
        DatabaseUrl="postgresql://db.example:5432/sourceflow",
        DatabaseResourceId="db-ABCDEFGHIJ",
        **parameters,
    )


def ssm(stack_part: str, key: str) -> str:
    """A dynamic reference to the SSM parameter another stack publishes."""
    return "{{resolve:ssm:" + NAMES.parameter(stack_part, key) + "}}"


def function_of(rendered: Rendered) -> dict[str, Any]:
    [function] = rendered.of_type("AWS::Serverless::Function").values()
    return function


def role_statements(rendered: Rendered, role: str) -> dict[str, dict[str, Any]]:
    [policy] = rendered.resources[role]["Properties"]["Policies"]
    return {statement["Sid"]: statement for statement in policy["PolicyDocument"]["Statement"]}


# -- sourceflow's rules ----------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
def test_every_queue_has_a_dead_letter_queue_after_the_runs_max_receive_count(name: str) -> None:
    rendered = service(name)
    queues = rendered.of_type("AWS::SQS::Queue")

    redrive = queues["Queue"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert int(redrive["maxReceiveCount"]) == CLOUD_TIMEOUTS.max_receive_count
    # The code reports a failure by name on the last delivery the queue allows
    env = function_of(rendered)["Environment"]["Variables"]
    assert int(env["MAX_RECEIVE_COUNT"]) == int(redrive["maxReceiveCount"])
    assert set(queues) == {"Queue", "DeadLetterQueue"}
    assert int(queues["DeadLetterQueue"]["MessageRetentionPeriod"]) == 14 * 24 * 3600


def test_no_other_template_declares_a_queue() -> None:
    for rendered in (core(), workflow()):
        assert rendered.of_type("AWS::SQS::Queue") == {}, rendered.name


def visibility_of(rendered: Rendered) -> int:
    return int(rendered.of_type("AWS::SQS::Queue")["Queue"]["VisibilityTimeout"])


@pytest.mark.parametrize("name", SERVICES)
def test_the_visibility_timeout_is_at_least_the_function_timeout(name: str) -> None:
    # AWS refuses an SQS event source whose queue hides a message for less than the function
    # may run
    rendered = service(name)

    assert visibility_of(rendered) >= int(function_of(rendered)["Timeout"])


@pytest.mark.parametrize("name", ["download", "scheduler"])
def test_where_no_task_waits_the_visibility_timeout_is_six_times_the_function_timeout(
    name: str,
) -> None:
    # AWS's advice for SQS event sources; validation's and unlocking's must fit inside their
    # tasks' timeouts instead (test_a_dead_delivery_comes_back_while_its_task_still_waits)
    rendered = service(name)

    assert visibility_of(rendered) >= 6 * int(function_of(rendered)["Timeout"])


@pytest.mark.parametrize("name", SERVICES)
def test_the_function_consumes_its_own_queue_with_partial_batch_responses(name: str) -> None:
    rendered = service(name)

    [mapping] = function_of(rendered)["Events"].values()

    assert mapping["Type"] == "SQS"
    assert mapping["Properties"]["Queue"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert int(mapping["Properties"]["BatchSize"]) == BATCH_SIZE[name]


def test_the_scheduler_admits_as_many_runs_as_the_download_function_runs_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the download function's event source mapping and the scheduler's environment
    [mapping] = function_of(service("download"))["Events"].values()
    sizing = mapping["Properties"]
    env = function_of(service("scheduler"))["Environment"]["Variables"]

    # Then the scheduler is told the download function's sizing, which is the catalogue's
    concurrency = int(sizing["ScalingConfig"]["MaximumConcurrency"])
    assert int(env["DOWNLOAD_CONCURRENCY"]) == concurrency == DOWNLOAD_CONCURRENCY
    assert int(env["DOWNLOAD_BATCH_SIZE"]) == int(sizing["BatchSize"]) == DOWNLOAD_BATCH_SIZE
    assert int(env["VALIDATE_TIMEOUT_SECONDS"]) == timeouts_in_the_templates().validate_seconds

    # And, reading it, admits that many runs at once
    for key, value in {**REQUIRED_ENV, **env}.items():
        monkeypatch.setenv(key, str(value))
    admission = settings_of("scheduler").admission
    assert admission.capacity == concurrency
    assert admission.validation_bound == timedelta(seconds=CLOUD_TIMEOUTS.validate_seconds)


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_the_embedded_stack_admits_as_many_runs_as_it_has_download_workers(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the environment the embedded stack gives the scheduler with `workers` per service
    env = {**REQUIRED_ENV, **timeouts_environment(LOCAL_TIMEOUTS), **admission_environment(workers)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    # Then the scheduler admits one run per download worker, each taking a batch of one
    admission = settings_of("scheduler").admission
    assert admission.capacity == workers
    assert BATCH_SIZE["download"] == DOWNLOAD_BATCH_SIZE
    assert admission.validation_bound == timedelta(seconds=LOCAL_TIMEOUTS.validate_seconds)


def test_the_scheduler_refuses_a_download_batch_of_more_than_one_at_cold_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in {**REQUIRED_ENV, "DOWNLOAD_BATCH_SIZE": "10"}.items():
        monkeypatch.setenv(key, value)
    refused = r"DOWNLOAD_BATCH_SIZE.*set the download function's BatchSize to 1"
    with pytest.raises(SettingsError, match=refused):
        settings_of("scheduler")


def test_no_template_maps_an_event_source_any_other_way() -> None:
    for rendered in every_rendering():
        assert rendered.of_type("AWS::Lambda::EventSourceMapping") == {}, rendered.name


def _policy_documents(rendered: Rendered) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in rendered.resources.items():
        properties = resource["Properties"]
        for policy in (
            properties.get("Policies", []) if resource["Type"] == "AWS::IAM::Role" else []
        ):
            yield logical_id, policy["PolicyDocument"]
        if "PolicyDocument" in properties:
            yield logical_id, properties["PolicyDocument"]


def test_policies_name_their_actions_and_resources() -> None:
    checked = 0
    for rendered in every_rendering():
        for owner, document in _policy_documents(rendered):
            for statement in document["Statement"]:
                where = f"{rendered.name}.yaml {owner} {statement.get('Sid')}"
                assert "NotAction" not in statement and "NotResource" not in statement, where
                if statement["Effect"] == "Deny":
                    continue  # denying everything is the safe direction
                actions = as_list(statement["Action"])
                assert not [action for action in actions if "*" in action], where
                for resource in as_list(statement["Resource"]):
                    if resource == "*":
                        assert set(actions) <= ONLY_ON_EVERY_RESOURCE, where
                    else:
                        # a trailing wildcard narrows to a prefix; anywhere else it widens
                        assert "*" not in str(resource)[:-1], where
                checked += 1
    assert checked > 30


def _grants(name: str, **parameters: str) -> dict[str, tuple[list[str], list[Any]]]:
    statements = role_statements(service(name, **parameters), "FunctionRole")
    return {
        sid: (as_list(statement["Action"]), as_list(statement["Resource"]))
        for sid, statement in statements.items()
    }


def test_every_function_writes_only_its_log_and_consumes_only_its_queue() -> None:
    for name in SERVICES:
        grants = _grants(name)
        assert grants["WriteOwnLog"][1] == [{"Fn::GetAtt": ["FunctionLogGroup", "Arn"]}]
        assert grants["ConsumeOwnQueue"][1] == [{"Fn::GetAtt": ["Queue", "Arn"]}]
        assert grants["ReadDatabaseSecret"] == (
            ["secretsmanager:GetSecretValue"],
            [ssm("core", "database-secret-arn")],
        )


def test_the_task_services_report_to_their_state_machine_and_only_download_heartbeats() -> None:
    assert _grants("validation")["ReportTaskOutcome"] == (
        ["states:SendTaskSuccess", "states:SendTaskFailure"],
        [STATE_MACHINE_ARN],
    )
    assert _grants("unlocking")["ReportTaskOutcome"] == _grants("validation")["ReportTaskOutcome"]
    assert "states:SendTaskHeartbeat" in _grants("download")["ReportTaskOutcome"][0]
    assert "ReportTaskOutcome" not in _grants("scheduler")


def test_only_download_writes_raw_objects() -> None:
    assert _grants("download")["WriteRawObjects"] == (
        ["s3:PutObject"],
        [f"arn:aws:s3:::{ssm('core', 'raw-bucket-name')}/*"],
    )
    for name in ("validation", "unlocking", "scheduler"):
        assert "WriteRawObjects" not in _grants(name), name


def test_the_services_that_connect_to_sources_read_only_the_stages_source_secrets() -> None:
    # Validation checks a source's connection; download reads the source. By default each
    # stage's functions read only that stage's source secrets, and are told the same prefix.
    prefix = connection_secrets_prefix(STAGE)
    assert prefix == "sourceflow/t1/sources/"
    for name in ("validation", "download"):
        assert _grants(name)["ReadConnectionSecrets"] == (
            ["secretsmanager:GetSecretValue"],
            [f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{prefix}*"],
        )
        env = function_of(service(name))["Environment"]["Variables"]
        assert env["CONNECTION_SECRETS_PREFIX"] == prefix
        assert env["CORE_DATABASE_SECRET_ARN"] == ssm("core", "database-secret-arn")
        assert "ALLOW_LOOPBACK_SOURCES" not in env  # the embedded stack's alone
    for name in ("unlocking", "scheduler"):
        assert "ReadConnectionSecrets" not in _grants(name), name
        env = function_of(service(name))["Environment"]["Variables"]
        assert not {
            "CONNECTION_SECRETS_PREFIX",
            "CORE_DATABASE_SECRET_ARN",
            "ALLOW_LOOPBACK_SOURCES",
        } & set(env), name


def test_a_deployment_may_name_its_own_connection_secrets_prefix() -> None:
    grants = _grants("download", ConnectionSecretsPrefix="acme/prod/")
    assert grants["ReadConnectionSecrets"][1] == [
        f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:acme/prod/*"
    ]
    env = function_of(service("download", ConnectionSecretsPrefix="acme/prod/"))["Environment"]
    assert env["Variables"]["CONNECTION_SECRETS_PREFIX"] == "acme/prod/"
    # Never every secret, and always a folder of its own for each source.
    pattern = re.compile(
        templates.load("service")["Parameters"]["ConnectionSecretsPrefix"]["AllowedPattern"]
    )
    assert [bool(pattern.fullmatch(p)) for p in ("", "acme/prod/", "acme/prod", "*", "/")] == [
        True,
        True,
        False,
        False,
        False,
    ]


def test_only_the_scheduler_starts_runs_and_only_it_and_validation_publish_events() -> None:
    workflows = STATE_MACHINE_ARN.replace(NAMES.state_machine, NAMES.workflow_state_machine("*"))
    assert _grants("scheduler")["StartRuns"] == (
        ["states:StartExecution"],
        [STATE_MACHINE_ARN, workflows],  # and the scheduled workflows' machines
    )
    for name in ("scheduler", "validation"):  # validation announces Approval Requested
        assert _grants(name)["PublishEvents"] == (
            ["events:PutEvents"],
            [ssm("core", "event-bus-arn")],
        )
    assert "StartRuns" not in _grants("validation")
    for name in ("download", "unlocking"):
        assert not {"StartRuns", "PublishEvents"} & set(_grants(name)), name


def test_optional_grants_appear_only_when_asked_for() -> None:
    assert "ReadSourceObjects" not in _grants("download")
    assert "AttachToVpc" not in _grants("download")
    drops = "arn:aws:s3:::drops,arn:aws:s3:::drops/*"
    arns = ["arn:aws:s3:::drops", "arn:aws:s3:::drops/*"]
    # Download reads the drops; validation only lists them (shared/connectors/s3_files.py check)
    assert _grants("download", SourceReadArns=drops)["ReadSourceObjects"] == (
        ["s3:GetObject", "s3:ListBucket"],
        arns,
    )
    assert _grants("validation", SourceReadArns=drops)["ReadSourceObjects"] == (
        ["s3:ListBucket"],
        arns,
    )
    assert "ReadSourceObjects" not in _grants("unlocking", SourceReadArns=drops)
    own = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:unlocking-db-AbCdEf"
    assert _grants("unlocking", ServiceDatabaseSecretArn=own)["ReadDatabaseSecret"][1] == [own]


@pytest.mark.parametrize("name", SERVICES)
def test_each_function_is_configured_as_its_settings_read(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the function's environment as the template sets it
    env = function_of(service(name))["Environment"]["Variables"]
    assert env["DATABASE_SECRET_ARN"] == ssm("core", "database-secret-arn")
    assert env["POWERTOOLS_SERVICE_NAME"] == NAMES.queue(name)
    for variable in [v for v in env if not v.startswith("POWERTOOLS_")]:
        assert f'"{variable}"' in _settings_source(name), f"{name} never reads {variable}"

    # When the service reads its settings from it (DATABASE_URL standing in for the secret,
    # the core's default for the approval timeout it publishes)
    resolved = {ssm("core", "approval-timeout-seconds"): str(CORE_APPROVAL_TIMEOUT)}
    for key, value in {**env, "DATABASE_URL": "postgresql://db/sourceflow"}.items():
        monkeypatch.setenv(key, resolved.get(str(value), str(value)))
    settings = settings_of(name)

    # Then it runs with the run's timeouts from shared/runtime/catalogue.py
    assert_runs_with(settings, name, CLOUD_TIMEOUTS)
    if name == "download":
        assert settings.raw_bucket == ssm("core", "raw-bucket-name")
        assert settings.raw_gzip_level == RAW_GZIP_LEVEL
    if name == "scheduler":
        assert settings.state_machine_arn == LIVE_STATE_MACHINE_ARN
        assert settings.event_bus_name == ssm("core", "event-bus-name")
    if name == "validation":
        assert settings.approval.required is True
        assert settings.approval.event_bus_name == ssm("core", "event-bus-name")


# What a service's settings need besides its timeouts, to be read at all.
REQUIRED_ENV = {
    "DATABASE_URL": "postgresql://db/sourceflow",
    "CONNECTION_SECRETS_PREFIX": connection_secrets_prefix(STAGE),
    "RAW_BUCKET": "raw",
    "STATE_MACHINE_ARN": STATE_MACHINE_ARN,
    "EVENT_BUS_NAME": "bus",
    "ALERTS_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:alerts",
    "NOTIFICATIONS_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:notifications",
}


@pytest.mark.parametrize("name", SERVICES)
def test_a_service_whose_environment_is_silent_reads_the_catalogues_defaults(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an environment that names none of the run's timeouts
    defaulted = ["RESPECS_APPROVAL_REQUIRED", "RAW_GZIP_LEVEL"]
    for key in [*timeouts_environment(CLOUD_TIMEOUTS), *defaulted]:
        monkeypatch.delenv(key, raising=False)
    for key, value in REQUIRED_ENV.items():
        monkeypatch.setenv(key, value)

    # When the service reads its settings
    settings = settings_of(name)

    # Then it runs with the cloud's timeouts and defaults, as the templates deploy them
    assert_runs_with(settings, name, CLOUD_TIMEOUTS)
    if name == "validation":
        assert settings.approval.required is RESPECS_APPROVAL_REQUIRED
        declared = templates.load("service")["Parameters"]["RespecsApprovalRequired"]["Default"]
        assert declared == str(RESPECS_APPROVAL_REQUIRED).lower()
    if name == "download":
        assert settings.raw_gzip_level == RAW_GZIP_LEVEL
        parameter = templates.load("service")["Parameters"]["RawGzipLevel"]
        assert parameter["Default"] == RAW_GZIP_LEVEL
        assert parameter["AllowedValues"] == list(GZIP_LEVELS)


@pytest.mark.parametrize("name", SERVICES)
def test_the_embedded_stack_configures_each_service_with_its_timeouts(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the environment the embedded stack gives the service's workers
    for key, value in {**REQUIRED_ENV, **timeouts_environment(LOCAL_TIMEOUTS)}.items():
        monkeypatch.setenv(key, value)

    # Then the service runs with the embedded stack's timeouts
    assert_runs_with(settings_of(name), name, LOCAL_TIMEOUTS)


def settings_of(name: str) -> Any:
    settings_module = __import__(f"services.{name}.settings", fromlist=["Settings"])
    return settings_module.Settings.from_env()


def assert_runs_with(settings: Any, name: str, timeouts: Timeouts) -> None:
    assert settings.consumer.max_receives == timeouts.max_receive_count
    assert settings.consumer.retry_backoff_seconds == timeouts.retry_backoff_seconds
    if name in ("validation", "download"):
        assert settings.lock_lease_seconds == timeouts.lock_lease_seconds
    if name == "download":
        assert settings.heartbeat_seconds == timeouts.heartbeat_interval_seconds
        assert settings.claim_seconds == timeouts.download_claim_seconds
        assert settings.stop_margin_seconds == timeouts.download_stop_margin_seconds
    if name == "validation":
        assert settings.approval.timeout_seconds == timeouts.approval_seconds
    if name == "scheduler":
        validate = timedelta(seconds=timeouts.validate_seconds)
        assert settings.admission.validation_bound == validate


def _settings_source(name: str) -> str:
    root = Path(__file__).resolve().parents[2]
    # The tasks service reads WORKFLOW_SQL_TARGETS by the name apply reads it by.
    shared = ("runtime/settings.py", "rules/workflows.py")
    return (root / "services" / name / "settings.py").read_text() + "".join(
        (root / "shared" / path).read_text() for path in shared
    )


@pytest.mark.parametrize("name", SERVICES)
def test_each_function_runs_its_handler_traced(name: str) -> None:
    function = function_of(service(name))

    assert function["Handler"] == f"services/{name}/handler.lambda_handler"
    assert function["Runtime"] == "python3.11"
    assert function["Tracing"] == "Active"
    assert function["FunctionName"] == NAMES.queue(name)


def test_the_state_machine_is_the_one_definition_with_every_placeholder_substituted() -> None:
    [machine] = workflow().of_type("AWS::Serverless::StateMachine").values()

    assert (templates.TEMPLATES_DIR / machine["DefinitionUri"]).resolve() == (
        statemachine.DEFINITION_PATH
    )
    assert set(machine["DefinitionSubstitutions"]) == statemachine.placeholders()
    assert machine["Name"] == NAMES.state_machine
    assert machine["Tracing"] == {"Enabled": True}
    assert machine["Logging"]["Destinations"] == [
        {"CloudWatchLogsLogGroup": {"LogGroupArn": {"Fn::GetAtt": ["StateMachineLogGroup", "Arn"]}}}
    ]


# -- the stacks find each other --------------------------------------------------------------


def _published(rendered: Rendered) -> set[str]:
    return {p["Name"] for p in rendered.of_type("AWS::SSM::Parameter").values()}


def _read(rendered: Rendered) -> set[str]:
    return set(SSM_REFERENCE.findall(json.dumps(rendered.resources)))


def test_every_parameter_a_stack_reads_is_published_by_a_stack_deployed_before_it() -> None:
    renderings = {
        "core": core(),
        "workflow": workflow(),
        "console": console_stack(),
        **{n: service(n) for n in SERVICES},
    }
    published: set[str] = set()
    for part in DEPLOY_ORDER:
        if part == MIGRATE:  # no stack: the database's migrations, as the core secret's admin
            assert NAMES.parameter("core", "database-secret-arn") in published
            continue
        rendered = renderings[part]
        missing = _read(rendered) - published
        assert not missing, f"{part} reads {sorted(missing)} before anything publishes them"
        published |= _published(rendered)
        assert all(name.startswith(NAMES.parameter(part, "")) for name in _published(rendered))


def test_the_one_forward_reference_is_the_state_machine_by_its_fixed_name() -> None:
    # The services name the state machine before the workflow stack creates it.
    [machine] = workflow().of_type("AWS::Serverless::StateMachine").values()
    assert STATE_MACHINE_ARN.endswith(f":stateMachine:{machine['Name']}")


# -- the embedded stack creates what the templates declare ------------------------------------


class RecordedAws:
    """Stands in for every client local.provision uses (with boto3's argument names),
    and records what it creates."""

    def __init__(self) -> None:
        self.sqs = self.s3 = self.events = self.sfn = self.sns = self
        self.queues: dict[str, dict[str, str]] = {}
        self.rules: dict[str, dict[str, Any]] = {}
        self.targets: dict[str, list[str]] = {}
        self.definitions: dict[str, dict[str, Any]] = {}

    @staticmethod
    def queue_url(name: str) -> str:
        return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"

    @staticmethod
    def queue_arn(name: str) -> str:
        return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"

    def create_queue(self, QueueName: str, Attributes: dict[str, str] | None = None) -> Any:
        self.queues[QueueName] = Attributes or {}
        return {"QueueUrl": self.queue_url(QueueName)}

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> Any:
        return {"Attributes": {"QueueArn": self.queue_arn(QueueUrl.rsplit("/", 1)[1])}}

    def put_rule(self, Name: str, **rule: Any) -> Any:
        self.rules[Name] = rule

    def put_targets(self, Rule: str, Targets: list[dict[str, str]], **_: Any) -> Any:
        self.targets[Rule] = [target["Arn"] for target in Targets]

    def create_topic(self, Name: str) -> Any:
        return {"TopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:{Name}"}

    def create_state_machine(self, name: str, definition: str, roleArn: str) -> Any:
        self.definitions[name] = json.loads(definition)
        return {"stateMachineArn": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"}

    def create_bucket(self, **_: Any) -> None: ...

    def create_event_bus(self, **_: Any) -> None: ...

    def subscribe(self, **_: Any) -> None: ...


@pytest.fixture(scope="module")
def local() -> RecordedAws:
    recorded = RecordedAws()
    provision(recorded, NAMES, CLOUD_TIMEOUTS)
    return recorded


@pytest.fixture(scope="module")
def meaning(local: RecordedAws) -> dict[str, Any]:
    """What each SSM parameter the templates read stands for on the embedded stack."""
    values: dict[str, Any] = {
        ssm("core", "event-bus-name"): NAMES.event_bus,
        ssm("core", "alerts-topic-arn"): f"arn:aws:sns:{REGION}:{ACCOUNT}:{NAMES.alerts_topic}",
        # Locally a queue stands in for the notifications topic (EventBridge cannot target SNS)
        ssm("core", "notifications-topic-arn"): local.queue_arn(NAMES.notifications_queue),
        ssm("core", "approval-timeout-seconds"): CORE_APPROVAL_TIMEOUT,
    }
    for name in SERVICES:
        values[ssm(name, "queue-url")] = local.queue_url(NAMES.queue(name))
        values[ssm(name, "queue-arn")] = local.queue_arn(NAMES.queue(name))
    return values


def test_the_embedded_stack_creates_the_queues_the_service_stacks_declare(
    local: RecordedAws,
) -> None:
    for name in SERVICES:
        queues = service(name).of_type("AWS::SQS::Queue")
        work, dead_letters = queues["Queue"], queues["DeadLetterQueue"]
        assert (work["QueueName"], dead_letters["QueueName"]) == (
            NAMES.queue(name),
            NAMES.dlq(name),
        )

        redrive = json.loads(local.queues[work["QueueName"]]["RedrivePolicy"])
        assert redrive == {
            "deadLetterTargetArn": local.queue_arn(dead_letters["QueueName"]),
            "maxReceiveCount": int(work["RedrivePolicy"]["maxReceiveCount"]),
        }
        assert dead_letters["QueueName"] in local.queues


def test_sourceflow_logs_reads_the_log_group_each_service_stack_declares() -> None:
    for name in SERVICES:
        [group] = service(name).of_type("AWS::Logs::LogGroup").values()
        assert group["LogGroupName"] == NAMES.log_group(name)


def test_the_embedded_stack_creates_the_rules_the_workflow_stack_declares(
    local: RecordedAws, meaning: dict[str, Any]
) -> None:
    declared = {rule["Name"]: rule for rule in workflow().of_type("AWS::Events::Rule").values()}

    assert set(declared) == set(local.rules)
    for name, rule in declared.items():
        created = local.rules[name]
        # A rule without a bus is on the default bus, where schedule rules must be
        bus = rule.get("EventBusName")
        assert (meaning[bus] if bus else None) == created.get("EventBusName"), name
        assert rule.get("ScheduleExpression") == created.get("ScheduleExpression"), name
        if "EventPattern" in rule:
            assert rule["EventPattern"] == json.loads(created["EventPattern"]), name
        assert [meaning[target["Arn"]] for target in rule["Targets"]] == local.targets[name], name


def test_the_rules_route_what_infra_resources_names() -> None:
    declared = {rule["Name"]: rule for rule in workflow().of_type("AWS::Events::Rule").values()}

    for schedule in SCHEDULE_RULES:
        rule = declared[NAMES.schedule_rule(schedule)]
        assert (rule["ScheduleExpression"], rule["Description"]) == (
            schedule.expression,
            schedule.description,
        )
    patterns = {
        NAMES.scheduler_commands_rule: SCHEDULER_COMMAND_DETAIL_TYPES,
        NAMES.notifications_rule: NOTIFICATION_DETAIL_TYPES,
        NAMES.tasks_rule: TASKS_DETAIL_TYPES,
    }
    for name, detail_types in patterns.items():
        assert declared[name]["EventPattern"] == {
            "source": [EVENT_SOURCE],
            "detail-type": list(detail_types),
        }


def test_the_embedded_stack_runs_the_state_machine_the_workflow_stack_declares(
    local: RecordedAws, meaning: dict[str, Any]
) -> None:
    [machine] = workflow().of_type("AWS::Serverless::StateMachine").values()
    # Each substitution as it means on the embedded stack: its queue, bus, topic, timeout
    substitutions = {
        key: meaning[value] if value in meaning else int(value)
        for key, value in machine["DefinitionSubstitutions"].items()
    }

    assert statemachine.render(substitutions) == local.definitions[NAMES.state_machine]


def test_the_core_names_what_infra_resources_names() -> None:
    rendered = core()

    assert rendered.of_type("AWS::Events::EventBus")["EventBus"]["Name"] == NAMES.event_bus
    topics = {p["TopicName"] for p in rendered.of_type("AWS::SNS::Topic").values()}
    assert topics == {NAMES.alerts_topic, NAMES.notifications_topic}
    bucket = rendered.of_type("AWS::S3::Bucket")["RawBucket"]["BucketName"]
    assert bucket == f"{NAMES.raw_bucket}-{ACCOUNT}-{REGION}"


def timeouts_in_the_templates() -> Timeouts:
    """The run's timeouts as the templates deploy them: the state machine's task timeouts, and
    each service's function, queue and environment."""
    [machine] = workflow().of_type("AWS::Serverless::StateMachine").values()
    task = machine["DefinitionSubstitutions"]
    validation, download, unlocking = (service(n) for n in ("validation", "download", "unlocking"))
    env = function_of(download)["Environment"]["Variables"]
    return Timeouts(
        validate_seconds=int(task["ValidateTimeoutSeconds"]),
        download_seconds=int(task["DownloadTimeoutSeconds"]),
        download_heartbeat_seconds=int(task["DownloadHeartbeatSeconds"]),
        unlock_seconds=int(task["UnlockTimeoutSeconds"]),
        max_receive_count=int(env["MAX_RECEIVE_COUNT"]),
        retry_backoff_seconds=float(env["RETRY_BACKOFF_SECONDS"]),
        validation_function_seconds=int(function_of(validation)["Timeout"]),
        validation_visibility_seconds=visibility_of(validation),
        unlocking_function_seconds=int(function_of(unlocking)["Timeout"]),
        unlocking_visibility_seconds=visibility_of(unlocking),
        heartbeat_interval_seconds=float(env["HEARTBEAT_SECONDS"]),
        lock_lease_seconds=int(env["LOCK_LEASE_SECONDS"]),
        approval_seconds=CORE_APPROVAL_TIMEOUT,
        download_function_seconds=int(function_of(download)["Timeout"]),
        download_stop_margin_seconds=int(env["DOWNLOAD_STOP_MARGIN_SECONDS"]),
        max_download_continuations=int(task["MaxDownloadContinuations"]),
    )


def test_the_timeouts_in_the_templates_are_those_of_the_catalogue() -> None:
    assert timeouts_in_the_templates() == CLOUD_TIMEOUTS
    download_env = function_of(service("download"))["Environment"]["Variables"]
    assert int(download_env["DOWNLOAD_CLAIM_SECONDS"]) == CLOUD_TIMEOUTS.download_claim_seconds


def test_unlocking_outlasts_the_respecs_statement_timeout_it_may_use_up() -> None:
    # (the templates leave RESPECS_STATEMENT_TIMEOUT_MS to its default)
    env = function_of(service("unlocking"))["Environment"]["Variables"]
    assert "RESPECS_STATEMENT_TIMEOUT_MS" not in env
    assert CLOUD_TIMEOUTS.unlocking_function_seconds * 1000 > RESPECS_STATEMENT_TIMEOUT_MS
    assert int(function_of(service("unlocking"))["Timeout"]) * 1000 > RESPECS_STATEMENT_TIMEOUT_MS


def test_a_download_stops_early_enough_to_finish_a_throttled_page_and_its_part() -> None:
    # Between deciding to stop and stopping, a download finishes the page it is reading (which
    # may wait out a vendor's Retry-After at the longest, then read at the slowest) and uploads
    # its part (after the part before, still going up): the stop margin holds that, and leaves
    # most of the function's time to read.
    _, read_seconds = REQUEST_TIMEOUT
    margin = CLOUD_TIMEOUTS.download_stop_margin_seconds
    assert margin >= VENDOR_MAX_WAIT_SECONDS + read_seconds
    assert margin <= CLOUD_TIMEOUTS.download_function_seconds / 2


def test_a_download_that_waits_its_longest_on_its_vendor_still_has_time_to_read() -> None:
    # (the templates leave the vendor waits to their defaults) A delivery that waits its longest
    # for a slot, then for one throttled page, has half its function's time left at least.
    env = function_of(service("download"))["Environment"]["Variables"]
    assert not {"VENDOR_MAX_WAIT_SECONDS", "VENDOR_SLOT_WAIT_SECONDS"} & set(env)
    waits = VENDOR_SLOT_WAIT_SECONDS + VENDOR_MAX_WAIT_SECONDS
    assert waits <= int(function_of(service("download"))["Timeout"]) / 2


# -- a step that committed is never reported as failed ----------------------------------------


def _local_timeouts_as_provisioned(timeouts: Timeouts) -> Timeouts:
    """`timeouts` as the embedded stack deploys them: the task timeouts of the definition it
    creates, its queues' visibility timeouts and redrive, and its workers' function timeouts."""
    recorded = RecordedAws()
    provision(recorded, NAMES, timeouts)
    states = recorded.definitions[NAMES.state_machine]["States"]
    unlock = {states[name]["TimeoutSeconds"] for name in Step.UNLOCK.states}
    assert len(unlock) == 1, unlock

    def queue(name: str) -> dict[str, str]:
        return recorded.queues[NAMES.queue(name)]

    functions = function_timeouts(timeouts)
    return replace(
        timeouts,
        validate_seconds=states[Step.VALIDATE]["TimeoutSeconds"],
        download_heartbeat_seconds=states[Step.DOWNLOAD]["HeartbeatSeconds"],
        unlock_seconds=unlock.pop(),
        max_receive_count=json.loads(queue("validation")["RedrivePolicy"])["maxReceiveCount"],
        validation_function_seconds=functions["validation"],
        validation_visibility_seconds=int(queue("validation")["VisibilityTimeout"]),
        unlocking_function_seconds=functions["unlocking"],
        unlocking_visibility_seconds=int(queue("unlocking")["VisibilityTimeout"]),
        download_function_seconds=functions["download"],
    )


def test_a_dead_delivery_comes_back_while_its_task_still_waits() -> None:
    # A validation or unlocking delivery that died after its commit is handed out again, and
    # every delivery the queue allows answers, inside the task's timeout; a dead download's
    # message is taken over inside its heartbeat timeout. In the cloud:
    assert timeouts_in_the_templates().delivery_problems() == []
    # and on the embedded stack
    assert _local_timeouts_as_provisioned(LOCAL_TIMEOUTS).delivery_problems() == []


def test_two_redeliveries_of_a_dead_delivery_fit_inside_the_task_timeout() -> None:
    for timeouts in (timeouts_in_the_templates(), _local_timeouts_as_provisioned(LOCAL_TIMEOUTS)):
        for task, visibility in (
            (timeouts.validate_seconds, timeouts.validation_visibility_seconds),
            (timeouts.unlock_seconds, timeouts.unlocking_visibility_seconds),
        ):
            assert 3 * visibility < task  # at the least, two redeliveries of a dead delivery
        assert timeouts.max_receive_count >= 3


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        # the values before issue 14: a dead delivery came back after its task had timed out
        (
            {"validation_visibility_seconds": 180, "validate_seconds": 120},
            "Validate: the deliveries its queue allows may take 750 s",
        ),
        ({"unlocking_visibility_seconds": 600}, "Unlock: the deliveries its queue allows"),
        ({"unlock_seconds": 500}, "longer than the task's timeout (500 s)"),
        # a longer backoff, or more receives, no longer fit
        ({"retry_backoff_seconds": 8.0}, "Unlock: the deliveries"),
        ({"max_receive_count": 6}, "Unlock: the deliveries"),
        ({"max_receive_count": 2}, "under two redeliveries"),
        ({"validation_visibility_seconds": 29}, "shorter than its function's timeout (30 s)"),
        ({"unlocking_function_seconds": 150}, "Unlock: its queue's visibility timeout"),
        ({"download_stop_margin_seconds": 900}, "Download: its stop margin (900 s) leaves"),
        ({"heartbeat_interval_seconds": 40.0}, "Download: a dead delivery's message"),
    ],
)
def test_a_timeout_that_breaks_it_is_named(change: dict[str, Any], problem: str) -> None:
    problems = replace(CLOUD_TIMEOUTS, **change).delivery_problems()

    assert any(problem in found for found in problems), problems


def test_the_redelivery_budget_counts_each_dead_or_failed_delivery_then_the_last_answer() -> None:
    # Five receives, backoff 2 s doubling: four deliveries that each hold the message for the
    # longer of the visibility (45 s) and the function timeout plus the backoff (30 + 2, 4, 8,
    # 16 s), then a last delivery that answers within the function timeout
    timeouts = Timeouts(max_receive_count=5, retry_backoff_seconds=2.0)

    assert timeouts.redelivery_seconds(function_seconds=30, visibility_seconds=45) == (
        45 + 45 + 45 + 46 + 30
    )
    assert timeouts.redelivery_seconds(function_seconds=30, visibility_seconds=30) == (
        32 + 34 + 38 + 46 + 30
    )


def test_only_the_schedulers_stack_pages_on_overdue_sources_as_the_scheduler_counts_them() -> None:
    for name in SERVICES:
        rendered = service(name)
        alarms = rendered.of_type("AWS::CloudWatch::Alarm")
        if name != "scheduler":
            assert "SourcesOverdueAlarm" not in alarms, name
            continue
        alarm = alarms["SourcesOverdueAlarm"]
        assert alarm["MetricName"] == SOURCES_OVERDUE_METRIC
        # The metric as the scheduler's function puts it: its namespace, its service dimension
        service_name = function_of(rendered)["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
        assert alarm["Namespace"] == NAMESPACE
        assert alarm["Dimensions"] == [{"Name": "service", "Value": service_name}]
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
        assert alarm["AlarmActions"] == [ssm("core", "alerts-topic-arn")]


def test_a_deployment_chooses_the_raw_objects_gzip_level() -> None:
    for level in GZIP_LEVELS:
        env = function_of(service("download", RawGzipLevel=str(level)))["Environment"]["Variables"]
        assert int(env["RAW_GZIP_LEVEL"]) == level
    for name in ("validation", "unlocking", "scheduler"):
        assert "RAW_GZIP_LEVEL" not in function_of(service(name))["Environment"]["Variables"]


def test_the_console_authorizes_every_request_with_iam_and_acts_as_the_caller() -> None:
    rendered = console_stack()
    # every method of its API, the pages included, needs a SigV4-signed request
    api = rendered.resources["Api"]["Properties"]
    assert api["Auth"] == {"DefaultAuthorizer": "AWS_IAM", "InvokeRole": "NONE"}
    events = function_of(rendered)["Events"].values()
    assert {event["Properties"]["RestApiId"]["Ref"] for event in events} == {"Api"}
    # and the function connects as the caller's login with an IAM token, to this database only
    grants = {
        sid: (as_list(statement["Action"]), as_list(statement["Resource"]))
        for sid, statement in role_statements(rendered, "FunctionRole").items()
    }
    assert grants["ConnectAsCaller"] == (
        ["rds-db:connect"],
        [f"arn:aws:rds-db:{REGION}:{ACCOUNT}:dbuser:db-ABCDEFGHIJ/*"],
    )
    # it writes nothing but its log, events, answers and the stage's queues: no S3, no secrets
    actions = {action for granted, _ in grants.values() for action in granted}
    assert not [a for a in actions if a.split(":")[0] in {"s3", "secretsmanager", "iam"}]


def test_the_console_is_configured_as_its_settings_read() -> None:
    function = function_of(console_stack())
    variables = {k: str(v) for k, v in function["Environment"]["Variables"].items()}
    assert set(REQUIRED) <= set(variables)
    assert variables["SOURCEFLOW_DB_IAM_AUTH"] == "true"
    config = from_env(variables)
    assert config.names.state_machine in config.require("STATE_MACHINE_ARN")
    assert function["Handler"] == "console/handler.lambda_handler"


# -- safe rollouts -----------------------------------------------------------------------------


def alarm_refs(preference: dict[str, Any]) -> list[str]:
    return [alarm["Ref"] for alarm in preference["Alarms"]]


def test_every_function_is_invoked_through_its_live_alias_and_rolls_back_on_its_alarms() -> None:
    rolled_back_on = {name: ["ErrorsAlarm", "DeadLetterAlarm"] for name in SERVICES}
    for rendered, expected in (
        *((service(name), alarms) for name, alarms in rolled_back_on.items()),
        (console_stack(), ["ErrorsAlarm"]),
    ):
        function = function_of(rendered)
        # SAM publishes a version per change, points the live alias at it and maps the queue
        # (or the API) to the alias, not to $LATEST
        assert function["AutoPublishAlias"] == LIVE_ALIAS, rendered.name
        preference = function["DeploymentPreference"]
        declared = templates.load(rendered.name)["Parameters"]["DeploymentType"]
        assert preference["Type"] == declared["Default"] == "Canary10Percent5Minutes"
        assert "AllAtOnce" in declared["AllowedValues"]  # a dev stage's choice
        # rolled back when the function crashes or (a service) a message reaches its DLQ
        assert alarm_refs(preference) == expected, rendered.name
        # by a role of its own that may move this function's alias and nothing else's
        assert preference["Role"] == {"Fn::GetAtt": ["DeploymentRole", "Arn"]}
        function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function['FunctionName']}"
        shifts = role_statements(rendered, "DeploymentRole")["ShiftLiveAlias"]["Resource"]
        assert shifts == [function_arn, f"{function_arn}:*"], rendered.name
        alarms = rendered.of_type("AWS::CloudWatch::Alarm")
        assert alarms["ErrorsAlarm"]["MetricName"] == "Errors"
        assert alarms["ErrorsAlarm"]["Dimensions"] == [
            {"Name": "FunctionName", "Value": {"Ref": "Function"}}
        ]


def test_the_state_machine_is_published_behind_its_live_alias_and_rolls_back_on_run_alarms() -> (
    None
):
    rendered = workflow()
    [machine] = rendered.of_type("AWS::Serverless::StateMachine").values()

    assert machine["AutoPublishAlias"] == LIVE_ALIAS
    preference = machine["DeploymentPreference"]
    assert (preference["Type"], preference["Percentage"], preference["Interval"]) == (
        "CANARY",
        10,
        10,
    )
    alarms = rendered.of_type("AWS::CloudWatch::Alarm")
    counted = {}
    for ref in alarm_refs(preference):
        # the runs of the state machine and of its live alias, under either dimension
        metrics = {m["Id"]: m for m in alarms[ref]["Metrics"]}
        watched = [metrics[i]["MetricStat"]["Metric"] for i in ("machine", "alias")]
        assert {m["Namespace"] for m in watched} == {"AWS/States"}
        assert [m["Dimensions"] for m in watched] == [
            [{"Name": "StateMachineArn", "Value": {"Ref": "StateMachine"}}],
            [{"Name": "StateMachineArn", "Value": f"${{StateMachine}}:{LIVE_ALIAS}"}],
        ]
        assert metrics["runs"]["Expression"] == "FILL(machine, 0) + FILL(alias, 0)"
        [name] = {m["MetricName"] for m in watched}
        counted[name] = (alarms[ref]["ComparisonOperator"], alarms[ref]["Threshold"])
    assert counted == {
        name: ("GreaterThanThreshold", 0)
        for name in ("ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted")
    }
    # All at once (a dev stage) takes no share nor interval
    at_once = Rendered("workflow", Stage=STAGE, DefinitionDeploymentType="ALL_AT_ONCE")
    [machine] = at_once.of_type("AWS::Serverless::StateMachine").values()
    assert set(machine["DeploymentPreference"]) == {"Type", "Alarms"}


def test_runs_start_through_the_state_machines_live_alias() -> None:
    scheduler_env = function_of(service("scheduler"))["Environment"]["Variables"]
    console_env = function_of(console_stack())["Environment"]["Variables"]

    assert scheduler_env["STATE_MACHINE_ARN"] == LIVE_STATE_MACHINE_ARN
    assert console_env["STATE_MACHINE_ARN"] == LIVE_STATE_MACHINE_ARN
    # IAM authorizes an alias's calls against the state machine itself (and the scheduler
    # starts the scheduled workflows' machines too)
    workflow_machines = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{NAMES.prefix}-wf-*"
    assert _grants("scheduler")["StartRuns"][1] == [STATE_MACHINE_ARN, workflow_machines]


# -- each stack owns its resources' policies ---------------------------------------------------


def rule_arn(name: str, bus: str | None = None) -> str:
    return f"arn:aws:events:{REGION}:{ACCOUNT}:rule/" + (f"{bus}/{name}" if bus else name)


def test_the_tasks_stack_lets_exactly_the_run_ends_rule_deliver_to_its_queue() -> None:
    [policy] = service("tasks").of_type("AWS::SQS::QueuePolicy").values()

    assert policy["Queues"] == [{"Ref": "Queue"}]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert (statement["Action"], statement["Resource"]) == (
        "sqs:SendMessage",
        {"Fn::GetAtt": ["Queue", "Arn"]},
    )
    delivering = statement["Condition"]["ArnEquals"]["aws:SourceArn"]
    assert delivering == rule_arn(NAMES.tasks_rule, NAMES.event_bus)
    # and no other service's stack grants a rule its queue but the scheduler's
    for name in SERVICES:
        if name not in ("scheduler", "tasks"):
            assert service(name).of_type("AWS::SQS::QueuePolicy") == {}


def test_the_schedulers_stack_lets_exactly_the_workflows_rules_deliver_to_its_queue() -> None:
    [policy] = service("scheduler").of_type("AWS::SQS::QueuePolicy").values()

    assert policy["Queues"] == [{"Ref": "Queue"}]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    # the rules by the ARNs their names give, which the workflow stack's rules carry
    delivering = statement["Condition"]["ArnEquals"]["aws:SourceArn"]
    assert delivering == [
        *(rule_arn(NAMES.schedule_rule(rule)) for rule in SCHEDULE_RULES),
        rule_arn(NAMES.scheduler_commands_rule, NAMES.event_bus),
    ]
    rules = workflow().of_type("AWS::Events::Rule").values()
    targets_scheduler = [
        r for r in rules if r["Targets"][0]["Arn"] == ssm("scheduler", "queue-arn")
    ]
    assert sorted(
        rule_arn(r["Name"], r.get("EventBusName") and NAMES.event_bus) for r in targets_scheduler
    ) == sorted(delivering)
    for name in ("validation", "download", "unlocking"):
        assert service(name).of_type("AWS::SQS::QueuePolicy") == {}, name


def test_the_core_lets_exactly_the_notifications_rule_publish_to_its_topic() -> None:
    [policy] = core().of_type("AWS::SNS::TopicPolicy").values()

    assert policy["Topics"] == [{"Ref": "NotificationsTopic"}]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert (statement["Principal"], statement["Action"]) == (
        {"Service": "events.amazonaws.com"},
        "sns:Publish",
    )
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == rule_arn(
        NAMES.notifications_rule, NAMES.event_bus
    )


def test_no_stack_sets_a_policy_on_another_stacks_resource() -> None:
    for rendered in every_rendering():
        for policy_type, key in (
            ("AWS::SQS::QueuePolicy", "Queues"),
            ("AWS::SNS::TopicPolicy", "Topics"),
        ):
            for policy in rendered.of_type(policy_type).values():
                for resource in policy[key]:
                    assert set(resource) == {"Ref"}, (rendered.name, resource)
                    assert resource["Ref"] in rendered.resources, (rendered.name, resource)


# -- alarms for on-call --------------------------------------------------------------------------


def test_every_alarm_tells_the_alerts_topic() -> None:
    counted = 0
    for rendered in every_rendering():
        for logical_id, alarm in rendered.of_type("AWS::CloudWatch::Alarm").items():
            assert alarm["AlarmActions"] == [ssm("core", "alerts-topic-arn")], logical_id
            assert alarm["AlarmName"].startswith(f"{NAMES.prefix}-"), logical_id
            counted += 1
    assert counted >= 4 * 5 + 3


def test_each_queue_alarms_on_a_message_older_than_any_it_keeps_legitimately() -> None:
    # longer than the task waits for it, than a download's invocation holds it, than the
    # scheduler's queue hides a message that died
    keeps = {
        "validation": CLOUD_TIMEOUTS.validate_seconds,
        "download": CLOUD_TIMEOUTS.download_function_seconds,
        "unlocking": CLOUD_TIMEOUTS.unlock_seconds,
        "scheduler": visibility_of(service("scheduler")),
    }
    for name, longest in keeps.items():
        alarm = service(name).of_type("AWS::CloudWatch::Alarm")["OldestMessageAlarm"]
        assert (alarm["Namespace"], alarm["MetricName"]) == (
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
        )
        assert alarm["Dimensions"] == [
            {"Name": "QueueName", "Value": {"Fn::GetAtt": ["Queue", "QueueName"]}}
        ]
        assert int(alarm["Threshold"]) > longest, name


def test_each_service_alarms_when_messages_wait_and_its_function_is_not_invoked() -> None:
    for name in SERVICES:
        alarm = service(name).of_type("AWS::CloudWatch::Alarm")["EventSourceStalledAlarm"]
        metrics = {metric["Id"]: metric for metric in alarm["Metrics"]}
        waiting = metrics["waiting"]["MetricStat"]["Metric"]
        invoked = metrics["invocations"]["MetricStat"]["Metric"]
        assert waiting["Dimensions"] == [
            {"Name": "QueueName", "Value": {"Fn::GetAtt": ["Queue", "QueueName"]}}
        ]
        assert invoked["MetricName"] == "Invocations"
        assert invoked["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "Function"}}]
        [returned] = [metric for metric in alarm["Metrics"] if metric["ReturnData"]]
        assert "waiting > 0" in returned["Expression"]
        assert "FILL(invocations, 0) == 0" in returned["Expression"]


def test_only_the_schedulers_stack_pages_when_no_tick_completes() -> None:
    for name in SERVICES:
        alarms = service(name).of_type("AWS::CloudWatch::Alarm")
        if name != "scheduler":
            assert "SchedulerSilentAlarm" not in alarms, name
            continue
        silent, overdue = alarms["SchedulerSilentAlarm"], alarms["SourcesOverdueAlarm"]
        # the metric every completed tick puts once (services/scheduler tick), its absence
        assert (silent["Namespace"], silent["MetricName"], silent["Dimensions"]) == (
            overdue["Namespace"],
            SOURCES_OVERDUE_METRIC,
            overdue["Dimensions"],
        )
        assert (silent["Statistic"], silent["ComparisonOperator"], silent["Threshold"]) == (
            "SampleCount",
            "LessThanThreshold",
            1,
        )
        assert silent["TreatMissingData"] == "breaching"
        assert silent["Period"] * silent["EvaluationPeriods"] == 600


# -- per-service settings and the stage's key ---------------------------------------------------


def test_a_service_may_be_given_its_own_memory() -> None:
    assert int(function_of(service("download", MemorySize="3008"))["MemorySize"]) == 3008
    sizing = templates.load("service")["Mappings"]["Sizing"]
    for name in SERVICES:
        assert function_of(service(name))["MemorySize"] == sizing[name]["MemorySize"], name


def _key_grants(rendered: Rendered, role: str) -> list[str] | None:
    statement = role_statements(rendered, role).get("UseStageKey")
    if statement is None:
        return None
    assert as_list(statement["Resource"]) == [KEY]
    return as_list(statement["Action"])


def test_without_a_key_nothing_uses_kms() -> None:
    for name in SERVICES:
        rendered = service(name)
        for queue in rendered.of_type("AWS::SQS::Queue").values():
            assert queue["SqsManagedSseEnabled"] is True and "KmsMasterKeyId" not in queue
        assert _key_grants(rendered, "FunctionRole") is None
    assert _key_grants(workflow(), "StateMachineRole") is None
    assert _key_grants(console_stack(), "FunctionRole") is None
    rendered = core()
    assert all("KmsMasterKeyId" not in t for t in rendered.of_type("AWS::SNS::Topic").values())
    [encryption] = rendered.resources["RawBucket"]["Properties"]["BucketEncryption"][
        "ServerSideEncryptionConfiguration"
    ]
    assert encryption == {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}


def test_the_stages_key_encrypts_bucket_topics_and_queues_and_only_their_users_may_use_it() -> None:
    # Given the one key, as PARAMS gives it to every stack
    rendered = Rendered(
        "core",
        Stage=STAGE,
        DatabaseSecretArn=f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:db-AbCdEf",
        KmsKeyArn=KEY,
    )
    # the core's bucket and topics
    assert {t["KmsMasterKeyId"] for t in rendered.of_type("AWS::SNS::Topic").values()} == {KEY}
    [encryption] = rendered.resources["RawBucket"]["Properties"]["BucketEncryption"][
        "ServerSideEncryptionConfiguration"
    ]
    assert encryption == {
        "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY},
        "BucketKeyEnabled": True,
    }
    # every service's queue and dead-letter queue, and the key for its consumer; download
    # also writes objects with it
    for name in SERVICES:
        keyed = service(name, KmsKeyArn=KEY)
        for queue in keyed.of_type("AWS::SQS::Queue").values():
            assert (queue["SqsManagedSseEnabled"], queue["KmsMasterKeyId"]) == (False, KEY)
        expected = ["kms:Decrypt", "kms:GenerateDataKey"] if name == "download" else ["kms:Decrypt"]
        assert _key_grants(keyed, "FunctionRole") == expected, name
    # the state machine sends to the queues and publishes alerts; the console replays
    both = ["kms:Decrypt", "kms:GenerateDataKey"]
    assert _key_grants(Rendered("workflow", Stage=STAGE, KmsKeyArn=KEY), "StateMachineRole") == both
    assert _key_grants(console_stack(KmsKeyArn=KEY), "FunctionRole") == both


def test_a_parameter_means_the_same_in_every_stack_that_declares_it() -> None:
    # PARAMS reach every stack: a key must be one setting wherever it is declared (templates
    # cannot share a declaration, so the copies are held equal here)
    declared: dict[str, list[dict[str, Any]]] = {}
    for name in ("core", "service", "workflow", "console"):
        for key, declaration in templates.load(name)["Parameters"].items():
            without_text = {k: v for k, v in declaration.items() if k != "Description"}
            declared.setdefault(key, []).append(without_text)
    shared = {key: copies for key, copies in declared.items() if len(copies) > 1}
    assert {"Stage", "KmsKeyArn", "DeploymentType"} <= set(shared)
    for key, copies in shared.items():
        assert all(copy == copies[0] for copy in copies), key

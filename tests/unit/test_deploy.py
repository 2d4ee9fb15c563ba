"""infra.deploy: which commands deploy which stack, in which order, and refusals up front."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from infra import build, deploy, templates
from infra.deploy import DEPLOY_ORDER, DeployError, Deployment, deploy_commands, require_aws_cli
from infra.resources import CONSOLE, SERVICES

DEV = Deployment("dev", "artifacts-123", {"AlertEmail": "ops@example.com"})


@pytest.fixture
def built_zip(tmp_path: Path) -> Path:
    archive = tmp_path / "download.zip"
    archive.write_bytes(b"the artifact")
    return archive


def overrides(command: Sequence[str]) -> dict[str, str]:
    start, end = command.index("--parameter-overrides") + 1, command.index("--tags")
    return dict(item.split("=", 1) for item in command[start:end])


def test_the_order_is_core_the_database_every_service_the_workflow_the_console() -> None:
    assert DEPLOY_ORDER == (
        "core",
        "migrate",
        "validation",
        "download",
        "unlocking",
        "scheduler",
        "tasks",
        "workflow",
        "console",
    )


def test_a_service_uploads_its_artifact_by_content_then_deploys_its_own_stack(
    built_zip: Path,
) -> None:
    upload, stack = deploy_commands("download", DEV, build_service=lambda _: built_zip)

    assert upload[:3] == ["aws", "s3", "cp"] and str(built_zip) in upload
    key = upload[-1].removeprefix("s3://artifacts-123/")
    assert key.startswith("sourceflow/dev/download/") and key.endswith(".zip")
    assert stack[:3] == ["aws", "cloudformation", "deploy"]
    assert stack[stack.index("--stack-name") + 1] == "sourceflow-dev-download"
    assert stack[stack.index("--template-file") + 1] == str(templates.path("service"))
    assert overrides(stack) == {
        "AlertEmail": "ops@example.com",
        "Service": "download",
        "CodeBucket": "artifacts-123",
        "CodeKey": key,
        "Stage": "dev",
    }


def test_the_console_uploads_its_artifact_then_deploys_its_own_template(
    built_zip: Path,
) -> None:
    upload, stack = deploy_commands("console", DEV, build_service=lambda _: built_zip)

    key = upload[-1].removeprefix("s3://artifacts-123/")
    assert key.startswith("sourceflow/dev/console/") and key.endswith(".zip")
    assert stack[stack.index("--stack-name") + 1] == "sourceflow-dev-console"
    assert stack[stack.index("--template-file") + 1] == str(templates.path("console"))
    assert "Service" not in overrides(stack)


def test_the_same_code_uploads_under_the_same_key(built_zip: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.zip"
    again.write_bytes(built_zip.read_bytes())

    first = deploy_commands("download", DEV, build_service=lambda _: built_zip)[0][-1]
    second = deploy_commands("download", DEV, build_service=lambda _: again)[0][-1]

    assert first == second


def test_the_workflow_is_packaged_so_its_definition_file_is_uploaded_first() -> None:
    def no_build(service: str) -> Path:
        raise AssertionError(f"the workflow builds no service, not {service}")

    package, stack = deploy_commands("workflow", DEV, build_service=no_build)

    assert package[:3] == ["aws", "cloudformation", "package"]
    assert package[package.index("--template-file") + 1] == str(templates.path("workflow"))
    packaged = package[package.index("--output-template-file") + 1]
    assert stack[stack.index("--template-file") + 1] == packaged
    assert stack[stack.index("--stack-name") + 1] == "sourceflow-dev-workflow"
    assert overrides(stack)["Stage"] == "dev"


def test_deploy_all_runs_every_part_in_order_and_stops_at_a_failure(built_zip: Path) -> None:
    ran: list[str] = []

    def run(command: Sequence[str]) -> None:
        if "infra.migrate_stage" in command:
            ran.append("migrate")
        if "--stack-name" in command:
            ran.append(command[command.index("--stack-name") + 1])
            if command[command.index("--stack-name") + 1] == "sourceflow-dev-unlocking":
                raise RuntimeError("stack failed")

    with pytest.raises(RuntimeError, match="stack failed"):
        deploy.deploy(DEPLOY_ORDER, DEV, run=run, build_service=lambda _: built_zip)

    assert ran == [
        "sourceflow-dev-core",
        "migrate",
        "sourceflow-dev-validation",
        "sourceflow-dev-download",
        "sourceflow-dev-unlocking",
    ]


def test_the_database_is_migrated_for_the_stage_with_unlockings_respecs_tables() -> None:
    tables = {"RespecsAllowedTables": "public.a,public.b"}
    for deployment in (
        Deployment("dev", "artifacts-123", tables),
        Deployment("dev", "artifacts-123", {}, {"unlocking": tables}),
    ):
        [command] = deploy_commands("migrate", deployment, build_service=_no_build)

        assert command[:3] == [sys.executable, "-m", "infra.migrate_stage"]
        assert command[command.index("--stage") + 1] == "dev"
        assert command[command.index("--respecs-tables") + 1] == "public.a,public.b"


def test_without_respecs_tables_the_database_keeps_those_it_has() -> None:
    # (a stack keeps a parameter not given; the Re-specs role keeps its tables likewise)
    [command] = deploy_commands("migrate", DEV, build_service=_no_build)

    assert "--respecs-tables" not in command


def test_a_database_failure_stops_the_deploy_before_any_service(built_zip: Path) -> None:
    ran: list[Sequence[str]] = []

    def run(command: Sequence[str]) -> None:
        ran.append(command)
        if "infra.migrate_stage" in command:
            raise subprocess.CalledProcessError(2, command)

    with pytest.raises(subprocess.CalledProcessError):
        deploy.deploy(DEPLOY_ORDER, DEV, run=run, build_service=lambda _: built_zip)

    assert not any("sourceflow-dev-validation" in command for command in ran)


def _no_build(service: str) -> Path:
    raise AssertionError(f"migrating builds nothing, not {service}")


def test_without_the_aws_cli_the_error_names_it_and_nothing_runs() -> None:
    with pytest.raises(DeployError, match=r"AWS CLI \(`aws`\).*Nothing was deployed"):
        require_aws_cli(which=lambda _: None)


def test_make_deploy_without_the_aws_cli_fails_before_building(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(deploy.shutil, "which", lambda _: None)

    def no_build(*_: object) -> Path:
        raise AssertionError("built or ran without a way to deploy")

    monkeypatch.setattr(deploy.build, "build", no_build)
    monkeypatch.setattr(deploy, "_run", no_build)

    status = deploy.main(["download", "--stage", "dev", "--artifact-bucket", "artifacts-123"])

    assert status == 2
    assert "the AWS CLI (`aws`)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("stage", "bucket", "problem"),
    [("", "b", "STAGE=''"), ("Prod", "b", "not a stage name"), ("dev", "", "ARTIFACT_BUCKET")],
)
def test_a_deployment_needs_a_stage_and_an_artifact_bucket(
    stage: str, bucket: str, problem: str
) -> None:
    with pytest.raises(DeployError, match=problem):
        Deployment(stage, bucket)


def test_an_unknown_part_is_refused() -> None:
    with pytest.raises(DeployError, match="nothing called 'frontend'"):
        deploy_commands("frontend", DEV, build_service=lambda _: Path("x"))


def test_the_makefile_builds_and_deploys_every_service_infra_resources_names() -> None:
    makefile = (build.ROOT / "Makefile").read_text()

    [declared] = re.findall(r"^DEPLOYABLES := (.+)$", makefile, flags=re.MULTILINE)

    assert tuple(declared.split()) == (*SERVICES, CONSOLE) == build.DEPLOYABLES


# -- per-part parameters -------------------------------------------------------------------------


def every_stacks_overrides(deployment: Deployment, built_zip: Path) -> dict[str, dict[str, str]]:
    stacks = {}
    for part in DEPLOY_ORDER:
        for command in deploy_commands(part, deployment, build_service=lambda _: built_zip):
            if "--stack-name" in command:
                stacks[part] = overrides(command)
    return stacks


def test_one_parts_parameter_reaches_its_stack_alone(built_zip: Path) -> None:
    # Given make deploy PARAMS="LogLevel=INFO" PARAMS_download="MemorySize=3008"
    deployment = deploy.deployment_from(
        "dev", "artifacts-123", ["LogLevel=INFO"], ["download:MemorySize=3008"]
    )

    stacks = every_stacks_overrides(deployment, built_zip)

    # Then only download's command line carries it; PARAMS still reach every stack
    assert [part for part, given in stacks.items() if "MemorySize" in given] == ["download"]
    assert stacks["download"]["MemorySize"] == "3008"
    assert all(given["LogLevel"] == "INFO" for given in stacks.values())


def test_the_stages_parameters_file_is_read_first_and_a_parts_own_win(
    tmp_path: Path, built_zip: Path
) -> None:
    # Given a parameters file for the stage, and the command line over it
    params = tmp_path / "dev.json"
    params.write_text(
        '{"all": {"LogLevel": "DEBUG", "AlertEmail": "file@example.com"},'
        ' "download": {"MemorySize": 2048, "LogLevel": "WARNING"},'
        ' "validation": {"RespecsApprovalRequired": false}}'
    )
    deployment = deploy.deployment_from(
        "dev", "artifacts-123", ["AlertEmail=ops@example.com"], ["download:MemorySize=3008"], params
    )

    stacks = every_stacks_overrides(deployment, built_zip)

    # Then the command line beats the file, a part's own beat every stack's, and no part's
    # own reach another
    assert stacks["core"]["AlertEmail"] == "ops@example.com"
    assert (stacks["download"]["MemorySize"], stacks["download"]["LogLevel"]) == ("3008", "WARNING")
    assert stacks["unlocking"]["LogLevel"] == "DEBUG" and "MemorySize" not in stacks["unlocking"]
    assert stacks["validation"]["RespecsApprovalRequired"] == "false"
    assert "RespecsApprovalRequired" not in stacks["download"]


def test_the_stages_own_file_is_found_by_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built_zip: Path
) -> None:
    monkeypatch.setattr(deploy, "PARAMS_DIR", tmp_path)
    (tmp_path / "prod.json").write_text('{"download": {"MemorySize": "3008"}}')

    assert deploy.deployment_from("prod", "b", [], []).parameters_for("download") == {
        "MemorySize": "3008"
    }
    assert deploy.deployment_from("dev", "b", [], []).parameters_for("download") == {}


@pytest.mark.parametrize(
    ("params", "part_params", "content", "problem"),
    [
        ([], ["frontend:MemorySize=3008"], None, "parameters for 'frontend', which is no part"),
        ([], ["download:KmsKeyArn=arn:aws:kms:x"], None, "KmsKeyArn is the whole stage's"),
        ([], ["MemorySize=3008"], None, "'MemorySize=3008' is not PART:Key=Value"),
        ([], [], '{"download": ["MemorySize"]}', "must map"),
        ([], [], "{not json", "cannot read the parameters file"),
    ],
)
def test_a_parameter_for_no_part_or_a_bad_file_is_refused_by_name(
    params: list[str], part_params: list[str], content: str | None, problem: str, tmp_path: Path
) -> None:
    params_file = None
    if content is not None:
        params_file = tmp_path / "dev.json"
        params_file.write_text(content)
    with pytest.raises(DeployError, match=problem):
        deploy.deployment_from("dev", "b", params, part_params, params_file)


def test_make_hands_each_parts_params_to_that_part_alone() -> None:
    dry_run = subprocess.run(
        [
            "make",
            "-n",
            "deploy-download",
            "STAGE=dev",
            "ARTIFACT_BUCKET=b",
            "PARAMS=LogLevel=INFO",
            "PARAMS_download=MemorySize=3008 RawGzipLevel=2",
            "PARAMS_validation=LogLevel=DEBUG",
        ],
        cwd=build.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    [command] = [line for line in dry_run.splitlines() if "-m infra.deploy" in line]
    assert '--param "LogLevel=INFO"' in command
    assert '--part-param "download:MemorySize=3008"' in command
    assert '--part-param "download:RawGzipLevel=2"' in command
    assert '--part-param "validation:LogLevel=DEBUG"' in command

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


def test_the_database_is_migrated_for_the_stage_with_the_services_respecs_tables() -> None:
    with_tables = Deployment("dev", "artifacts-123", {"RespecsAllowedTables": "public.a,public.b"})

    [command] = deploy_commands("migrate", with_tables, build_service=_no_build)

    assert command[:3] == [sys.executable, "-m", "infra.migrate_stage"]
    assert command[command.index("--stage") + 1] == "dev"
    assert command[command.index("--respecs-tables") + 1] == "public.a,public.b"


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

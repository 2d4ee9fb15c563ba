"""Deploy sourceflow to AWS: one CloudFormation stack per part, in dependency order.

    core -> migrate -> validation, download, unlocking, scheduler -> workflow -> console

The state machine needs the services' queue URLs and the services' roles need the state
machine, so one side has to know the other before it exists. The services do: they name the
state machine by its fixed ARN (`sourceflow-<stage>-run`), which IAM accepts before the state
machine exists, and nothing calls it before the workflow stack creates the rules that start
runs. Everything else flows forward through SSM parameters (`/sourceflow/<stage>/...`): the
core publishes the bus, bucket, topics and database secret that the services read; each
service publishes its queue, which the workflow stack reads. Between the core and the services
the database is migrated (`migrate`: infra/migrate_stage.py, with the core's database secret),
so no function meets a table it expects missing. docs/deploy.md says more.

A service's code goes up as `build/<service>.zip` under a key named after its content, so a
stack changes only when its code or template does. Needs the AWS CLI (`aws`) and
credentials; run as `python -m infra.deploy PART|all --stage STAGE --artifact-bucket BUCKET
[--param Key=Value ...]` (`make deploy-<part>`, `make deploy`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra import build, templates
from infra.resources import CONSOLE, SERVICES, Names

# Not a stack: the database's migrations, roles and grants (infra/migrate_stage.py).
MIGRATE = "migrate"
# The console last: it reads the state machine's runs and the services' queues.
DEPLOY_ORDER = (templates.CORE, MIGRATE, *SERVICES, templates.WORKFLOW, CONSOLE)
PACKAGED_DIR = build.ROOT / "build"  # where `aws cloudformation package` writes its copies
STAGE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,15}$")  # as the templates' Stage parameter
AWS_CLI = "aws"

Runner = Callable[[Sequence[str]], None]
Builder = Callable[[str], Path]


class DeployError(RuntimeError):
    pass


@dataclass(frozen=True)
class Deployment:
    stage: str
    artifact_bucket: str
    # Template parameters to set; a template ignores the keys it does not declare, and keeps
    # its previous value for a parameter that is not given.
    parameters: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not STAGE_PATTERN.match(self.stage):
            raise DeployError(
                f"STAGE={self.stage!r} is not a stage name: lower-case letters, digits and "
                "dashes, starting with a letter, at most 16 characters (e.g. STAGE=dev)"
            )
        if not self.artifact_bucket:
            raise DeployError(
                "ARTIFACT_BUCKET is not set: name an S3 bucket you own in the target region, "
                "where code and the state machine definition are uploaded for CloudFormation"
            )


def deploy_commands(
    part: str, deployment: Deployment, *, build_service: Builder
) -> list[list[str]]:
    """The AWS CLI commands that deploy one part, in order."""
    names, stage = Names(deployment.stage), deployment.stage
    bucket, prefix = deployment.artifact_bucket, f"sourceflow/{deployment.stage}/{part}"
    if part == MIGRATE:
        # The Re-specs role may update the tables the services allow (the same parameter).
        tables = deployment.parameters.get("RespecsAllowedTables", "")
        migrate = [sys.executable, "-m", "infra.migrate_stage"]
        return [[*migrate, "--stage", stage, "--respecs-tables", tables]]
    if part in build.DEPLOYABLES:
        archive = build_service(part)
        key = f"{prefix}/{build.sha256(archive)}.zip"
        # Every service's stack is the one service template; the console has its own.
        template, chosen = ("service", {"Service": part}) if part in SERVICES else (part, {})
        return [
            [AWS_CLI, "s3", "cp", "--only-show-errors", str(archive), f"s3://{bucket}/{key}"],
            _cloudformation_deploy(
                templates.path(template),
                names.stack(part),
                stage,
                {**deployment.parameters, **chosen, "CodeBucket": bucket, "CodeKey": key},
            ),
        ]
    if part in (templates.CORE, templates.WORKFLOW):
        # `package` uploads what a template names by local path (the workflow's
        # DefinitionUri) and writes a copy that names the uploaded object instead.
        packaged = PACKAGED_DIR / f"{part}.packaged.yaml"
        return [
            [
                AWS_CLI,
                "cloudformation",
                "package",
                "--template-file",
                str(templates.path(part)),
                "--s3-bucket",
                bucket,
                "--s3-prefix",
                prefix,
                "--output-template-file",
                str(packaged),
            ],
            _cloudformation_deploy(packaged, names.stack(part), stage, deployment.parameters),
        ]
    raise DeployError(f"nothing called {part!r} to deploy; parts are {', '.join(DEPLOY_ORDER)}")


def _cloudformation_deploy(
    template: Path, stack: str, stage: str, parameters: Mapping[str, str]
) -> list[str]:
    return [
        AWS_CLI,
        "cloudformation",
        "deploy",
        "--template-file",
        str(template),
        "--stack-name",
        stack,
        # The roles are unnamed (CAPABILITY_IAM); SAM's transform expands (AUTO_EXPAND).
        "--capabilities",
        "CAPABILITY_IAM",
        "CAPABILITY_AUTO_EXPAND",
        "--no-fail-on-empty-changeset",
        "--parameter-overrides",
        *(f"{key}={value}" for key, value in {**parameters, "Stage": stage}.items()),
        "--tags",
        "project=sourceflow",
        f"stage={stage}",
    ]


def require_aws_cli(which: Callable[[str], str | None]) -> None:
    if which(AWS_CLI) is None:
        raise DeployError(
            "deploying needs the AWS CLI (`aws`), which is not installed or not on PATH: "
            "install AWS CLI v2 and configure credentials for the target account. "
            "Nothing was deployed."
        )


def deploy(
    parts: Sequence[str],
    deployment: Deployment,
    *,
    run: Runner,
    build_service: Builder,
) -> None:
    """Deploy the parts in the order given; stops at the first that fails."""
    PACKAGED_DIR.mkdir(exist_ok=True)
    for part in parts:
        what = "the database" if part == MIGRATE else Names(deployment.stage).stack(part)
        print(f"deploying {what}", flush=True)
        for command in deploy_commands(part, deployment, build_service=build_service):
            run(command)


def _run(command: Sequence[str]) -> None:
    subprocess.run(command, check=True)


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.deploy", description=__doc__.split("\n")[0]
    )
    parser.add_argument("part", choices=[*DEPLOY_ORDER, "all"])
    parser.add_argument("--stage", default="")
    parser.add_argument("--artifact-bucket", default="")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        require_aws_cli(shutil.which)
        parameters = dict(_key_value(item) for item in args.param)
        deployment = Deployment(args.stage, args.artifact_bucket, parameters)
        parts = DEPLOY_ORDER if args.part == "all" else [args.part]
        deploy(parts, deployment, run=_run, build_service=build.build)
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 2
    except (build.BuildError, subprocess.CalledProcessError) as exc:
        print(f"deploy failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _key_value(item: str) -> tuple[str, str]:
    key, separator, value = item.partition("=")
    if not separator or not key:
        raise DeployError(f"parameter {item!r} is not Key=Value")
    return key, value


if __name__ == "__main__":
    sys.exit(main())

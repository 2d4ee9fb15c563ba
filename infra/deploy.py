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
[--param Key=Value ...] [--part-param PART:Key=Value ...] [--params-file FILE]` (`make
deploy-<part>`, `make deploy`).

Template parameters come from the stage's parameters file (`infra/params/<stage>.json` when it
exists: `{"all": {...}, "<part>": {...}}`), then the command line (PARAMS, then PARAMS_<part>):
a later one wins, and a part's own reach that part's stack alone.
"""

from __future__ import annotations

import argparse
import json
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
# The service template's parameter naming the tables a Re-specs query may update.
RESPECS_TABLES_PARAMETER = "RespecsAllowedTables"
# The console last: it reads the state machine's runs and the services' queues.
DEPLOY_ORDER = (templates.CORE, MIGRATE, *SERVICES, templates.WORKFLOW, CONSOLE)
PACKAGED_DIR = build.ROOT / "build"  # where `aws cloudformation package` writes its copies
STAGE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,15}$")  # as the templates' Stage parameter
AWS_CLI = "aws"
PARAMS_DIR = build.ROOT / "infra" / "params"  # <stage>.json: the stage's parameters file
ALL_PARTS = "all"  # the parameters file's key for what every stack takes
# One setting of the whole stage, which every stack that declares it must agree on.
STAGE_WIDE_PARAMETERS = frozenset({"KmsKeyArn"})

Runner = Callable[[Sequence[str]], None]
Builder = Callable[[str], Path]


class DeployError(RuntimeError):
    pass


@dataclass(frozen=True)
class Deployment:
    stage: str
    artifact_bucket: str
    # Template parameters to set for every stack; a template ignores the keys it does not
    # declare, and keeps its previous value for a parameter that is not given.
    parameters: Mapping[str, str] = field(default_factory=dict)
    # A part's own, over those: they reach that part's stack alone.
    part_parameters: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

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
        for part, given in self.part_parameters.items():
            if part not in DEPLOY_ORDER:
                raise DeployError(
                    f"parameters for {part!r}, which is no part; parts are "
                    f"{', '.join(DEPLOY_ORDER)} (PARAMS_<part>, or a key of the parameters file)"
                )
            stage_wide = sorted(STAGE_WIDE_PARAMETERS & set(given))
            if stage_wide:
                raise DeployError(
                    f"{', '.join(stage_wide)} is the whole stage's: give it in PARAMS (or the "
                    f'parameters file\'s "{ALL_PARTS}"), not for {part} alone'
                )

    def parameters_for(self, part: str) -> dict[str, str]:
        return {**self.parameters, **self.part_parameters.get(part, {})}


def deploy_commands(
    part: str, deployment: Deployment, *, build_service: Builder
) -> list[list[str]]:
    """The AWS CLI commands that deploy one part, in order."""
    names, stage = Names(deployment.stage), deployment.stage
    bucket, prefix = deployment.artifact_bucket, f"sourceflow/{deployment.stage}/{part}"
    if part == MIGRATE:
        # The Re-specs role may update the tables unlocking allows (the same parameter); not
        # given, those it may update now (the stack keeps its value too).
        given = deployment.parameters_for("unlocking").get(RESPECS_TABLES_PARAMETER)
        tables = [] if given is None else ["--respecs-tables", given]
        return [[sys.executable, "-m", "infra.migrate_stage", "--stage", stage, *tables]]
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
                {**deployment.parameters_for(part), **chosen, "CodeBucket": bucket, "CodeKey": key},
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
            _cloudformation_deploy(
                packaged, names.stack(part), stage, deployment.parameters_for(part)
            ),
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
    parser.add_argument("--part-param", action="append", default=[], metavar="PART:KEY=VALUE")
    parser.add_argument("--params-file", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        require_aws_cli(shutil.which)
        deployment = deployment_from(
            args.stage, args.artifact_bucket, args.param, args.part_param, args.params_file
        )
        parts = DEPLOY_ORDER if args.part == "all" else [args.part]
        deploy(parts, deployment, run=_run, build_service=build.build)
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 2
    except (build.BuildError, subprocess.CalledProcessError) as exc:
        print(f"deploy failed: {exc}", file=sys.stderr)
        return 1
    return 0


def deployment_from(
    stage: str,
    artifact_bucket: str,
    params: Sequence[str],
    part_params: Sequence[str],
    params_file: Path | None = None,
) -> Deployment:
    """The deployment the command line asks for, over the stage's parameters file (the one
    named, else `infra/params/<stage>.json` if there is one)."""
    path = params_file or PARAMS_DIR / f"{stage}.json"
    # (a stage that is no stage name is refused below, and names no file of this folder)
    stages_own = STAGE_PATTERN.match(stage) is not None and path.is_file()
    from_file = read_parameters_file(path) if params_file or stages_own else {}
    every = {**from_file.pop(ALL_PARTS, {}), **dict(_key_value(item) for item in params)}
    per_part: dict[str, dict[str, str]] = {part: dict(given) for part, given in from_file.items()}
    for item in part_params:
        part, separator, setting = item.partition(":")
        if not separator:
            raise DeployError(f"part parameter {item!r} is not PART:Key=Value")
        per_part.setdefault(part, {}).update([_key_value(setting)])
    return Deployment(stage, artifact_bucket, every, per_part)


def read_parameters_file(path: Path) -> dict[str, dict[str, str]]:
    """`{"all": {"Key": "Value"}, "<part>": {...}}`; values may be numbers or booleans."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DeployError(f"cannot read the parameters file {path}: {exc}") from exc
    if not isinstance(content, dict) or not all(
        isinstance(given, dict) and all(not isinstance(v, dict | list) for v in given.values())
        for given in content.values()
    ):
        raise DeployError(
            f'the parameters file {path} must map "{ALL_PARTS}" or a part to '
            '{"Key": "Value", ...}, e.g. {"download": {"MemorySize": "3008"}}'
        )
    return {
        part: {key: _parameter_text(value) for key, value in given.items()}
        for part, given in content.items()
    }


def _parameter_text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _key_value(item: str) -> tuple[str, str]:
    key, separator, value = item.partition("=")
    if not separator or not key:
        raise DeployError(f"parameter {item!r} is not Key=Value")
    return key, value


if __name__ == "__main__":
    sys.exit(main())

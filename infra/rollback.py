"""Point a part's live alias back at the version before the one it serves.

A deploy publishes a new version of each function (and of the state machine) and moves the
`live` alias to it, gradually, rolling back by itself if the part's alarms fire meanwhile
(infra/templates/*.yaml, `DeploymentPreference`). This is for afterwards: a release that
passed its canary and proves wrong later. Runs already under way keep the version they started
on; new deliveries and new runs take the previous one at once.

The next `make deploy-<part>` moves the alias to what its template and code say again, so redeploy
the code you went back to (its artifact's key is its content's hash) before deploying anything
else. Run as `python -m infra.rollback PART --stage STAGE` (`make rollback-<part> STAGE=…`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from infra import templates
from infra.deploy import AWS_CLI, STAGE_PATTERN, DeployError, require_aws_cli
from infra.resources import CONSOLE, LIVE_ALIAS, SERVICES, Names

ROLLBACK_PARTS = (*SERVICES, CONSOLE, templates.WORKFLOW)

Query = Callable[[Sequence[str]], Any]  # runs an AWS CLI command, returns its JSON answer


class RollbackError(DeployError):
    pass


def previous_version(current: int, published: Sequence[int], what: str) -> int:
    """The latest version published before `current`."""
    earlier = [version for version in published if version < current]
    if not earlier:
        raise RollbackError(
            f"{what} serves version {current}, and no version before it is left to go back to; "
            "deploy the code you want instead"
        )
    return max(earlier)


def rollback_function(function: str, query: Query) -> tuple[int, int]:
    """Point the function's live alias at its previous version; returns (from, to)."""
    lambda_cli = [AWS_CLI, "lambda"]
    alias = query([*lambda_cli, "get-alias", "--function-name", function, "--name", LIVE_ALIAS])
    current = int(alias["FunctionVersion"])
    listed = query([*lambda_cli, "list-versions-by-function", "--function-name", function])
    published = [int(v["Version"]) for v in listed["Versions"] if v["Version"].isdigit()]
    previous = previous_version(current, published, f"{function}:{LIVE_ALIAS}")
    query(
        [
            *lambda_cli,
            "update-alias",
            "--function-name",
            function,
            "--name",
            LIVE_ALIAS,
            "--function-version",
            str(previous),
            # an unfinished canary's weights go too: all of the alias to the previous version
            "--routing-config",
            "AdditionalVersionWeights={}",
        ]
    )
    return current, previous


def rollback_state_machine(state_machine_arn: str, query: Query) -> tuple[int, int]:
    """Point the state machine's live alias at its previous version; returns (from, to)."""
    sfn = [AWS_CLI, "stepfunctions"]
    alias_arn = f"{state_machine_arn}:{LIVE_ALIAS}"
    alias = query([*sfn, "describe-state-machine-alias", "--state-machine-alias-arn", alias_arn])
    routes = alias["routingConfiguration"]
    # mid-deployment the alias routes to two versions: the one that had all of it is the newer's
    # predecessor, so go back from the newest of them
    current = max(_version(route["stateMachineVersionArn"]) for route in routes)
    listed = query([*sfn, "list-state-machine-versions", "--state-machine-arn", state_machine_arn])
    published = [_version(v["stateMachineVersionArn"]) for v in listed["stateMachineVersions"]]
    previous = previous_version(current, published, alias_arn)
    query(
        [
            *sfn,
            "update-state-machine-alias",
            "--state-machine-alias-arn",
            alias_arn,
            "--routing-configuration",
            f"stateMachineVersionArn={state_machine_arn}:{previous},weight=100",
        ]
    )
    return current, previous


def _version(version_arn: str) -> int:
    return int(version_arn.rsplit(":", 1)[1])


def rollback(part: str, stage: str, query: Query) -> str:
    """Roll one part back; says what moved where."""
    if not STAGE_PATTERN.match(stage):
        raise RollbackError(f"STAGE={stage!r} is not a stage name (e.g. STAGE=dev)")
    names = Names(stage)
    if part in (*SERVICES, CONSOLE):
        function = names.function(part)
        current, previous = rollback_function(function, query)
        return f"{function}:{LIVE_ALIAS} now serves version {previous} (was {current})"
    if part == templates.WORKFLOW:
        parameter = names.parameter(templates.WORKFLOW, "state-machine-arn")
        found = query([AWS_CLI, "ssm", "get-parameter", "--name", parameter])
        state_machine_arn = found["Parameter"]["Value"]
        current, previous = rollback_state_machine(state_machine_arn, query)
        return f"{names.state_machine}:{LIVE_ALIAS} now runs version {previous} (was {current})"
    raise RollbackError(
        f"nothing called {part!r} to roll back; parts are {', '.join(ROLLBACK_PARTS)}"
    )


def _query(command: Sequence[str]) -> Any:
    answer = subprocess.run([*command, "--output", "json"], check=True, capture_output=True)
    return json.loads(answer.stdout) if answer.stdout.strip() else {}


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.rollback", description=__doc__.split("\n")[0]
    )
    parser.add_argument("part", choices=ROLLBACK_PARTS)
    parser.add_argument("--stage", default="")
    args = parser.parse_args(argv)
    try:
        require_aws_cli(shutil.which)
        print(rollback(args.part, args.stage, _query))
    except DeployError as exc:
        print(f"rollback: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"rollback failed: {exc}: {exc.stderr.decode(errors='replace')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

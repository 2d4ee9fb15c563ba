"""infra.rollback: a part's live alias pointed back at the version before the one it serves."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest

from infra import build
from infra.resources import CONSOLE, SERVICES
from infra.rollback import ROLLBACK_PARTS, RollbackError, previous_version, rollback

MACHINE = "arn:aws:states:eu-west-1:123456789012:stateMachine:sourceflow-dev-run"


class FakeAws:
    """Answers the AWS CLI's queries from canned JSON, by the command's first three words."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers, self.commands = answers, []  # type: ignore[var-annotated]

    def __call__(self, command: Sequence[str]) -> Any:
        self.commands.append(list(command))
        return self.answers.get(" ".join(command[1:3]), {})

    def last(self) -> list[str]:
        return list(self.commands[-1])


def test_a_function_goes_back_to_the_version_before_the_one_it_serves() -> None:
    aws = FakeAws(
        {
            "lambda get-alias": {"Name": "live", "FunctionVersion": "7"},
            "lambda list-versions-by-function": {
                "Versions": [{"Version": v} for v in ("$LATEST", "3", "5", "7", "8")]
            },
        }
    )

    said = rollback("download", "dev", aws)

    update = aws.last()
    assert update[:3] == ["aws", "lambda", "update-alias"]
    assert update[update.index("--function-name") + 1] == "sourceflow-dev-download"
    assert update[update.index("--name") + 1] == "live"
    assert update[update.index("--function-version") + 1] == "5"
    assert update[update.index("--routing-config") + 1] == "AdditionalVersionWeights={}"
    assert said == "sourceflow-dev-download:live now serves version 5 (was 7)"


def test_the_state_machine_goes_back_to_the_version_before_the_newest_it_routes_to() -> None:
    # mid-canary: the alias routes 90 % to version 4 and 10 % to the new version 6
    aws = FakeAws(
        {
            "ssm get-parameter": {"Parameter": {"Value": MACHINE}},
            "stepfunctions describe-state-machine-alias": {
                "routingConfiguration": [
                    {"stateMachineVersionArn": f"{MACHINE}:4", "weight": 90},
                    {"stateMachineVersionArn": f"{MACHINE}:6", "weight": 10},
                ]
            },
            "stepfunctions list-state-machine-versions": {
                "stateMachineVersions": [
                    {"stateMachineVersionArn": f"{MACHINE}:{v}"} for v in (6, 4, 2)
                ]
            },
        }
    )

    said = rollback("workflow", "dev", aws)

    assert aws.commands[0][-1] == "/sourceflow/dev/workflow/state-machine-arn"
    update = aws.last()
    assert update[:3] == ["aws", "stepfunctions", "update-state-machine-alias"]
    assert update[update.index("--state-machine-alias-arn") + 1] == f"{MACHINE}:live"
    routing = update[update.index("--routing-configuration") + 1]
    assert routing == f"stateMachineVersionArn={MACHINE}:4,weight=100"
    assert said == "sourceflow-dev-run:live now runs version 4 (was 6)"


def test_with_no_earlier_version_nothing_moves_and_the_error_says_so() -> None:
    aws = FakeAws(
        {
            "lambda get-alias": {"FunctionVersion": "1"},
            "lambda list-versions-by-function": {"Versions": [{"Version": "1"}]},
        }
    )

    with pytest.raises(RollbackError, match="serves version 1, and no version before it"):
        rollback("scheduler", "dev", aws)

    assert not [c for c in aws.commands if "update-alias" in c]


@pytest.mark.parametrize(
    ("part", "stage", "problem"),
    [("core", "dev", "nothing called 'core'"), ("download", "Prod", "not a stage name")],
)
def test_a_part_without_an_alias_or_a_bad_stage_is_refused(
    part: str, stage: str, problem: str
) -> None:
    with pytest.raises(RollbackError, match=problem):
        rollback(part, stage, FakeAws({}))


def test_previous_version_skips_gaps() -> None:
    assert previous_version(9, [1, 4, 9, 12], "f") == 4


def test_the_makefile_rolls_back_every_part_with_an_alias() -> None:
    makefile = (build.ROOT / "Makefile").read_text()
    [declared] = re.findall(r"^ROLLBACK_PARTS := (.+)$", makefile, flags=re.MULTILINE)
    assert declared == "$(DEPLOYABLES) workflow"
    assert set(ROLLBACK_PARTS) == {*SERVICES, CONSOLE, "workflow"}

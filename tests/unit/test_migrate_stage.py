"""infra.migrate_stage: where the deploy's migration step finds the administrator's login, and
what it refuses before reaching the database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from psycopg2.extensions import parse_dsn

from infra import migrate_stage
from infra.migrate_stage import StageMigrationError, admin_url

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:sourceflow/dev/db-AbCdEf"
PARAMETER = {"Name": "/sourceflow/dev/core/database-secret-arn"}


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Stubber]]:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    client = boto3.client(
        "ssm", region_name="eu-west-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_the_administrator_is_the_one_the_core_stacks_database_secret_describes(
    ssm: tuple[Any, Stubber],
) -> None:
    client, stubber = ssm
    stubber.add_response("get_parameter", {"Parameter": {"Value": SECRET_ARN}}, PARAMETER)
    secret = {"host": "db.internal", "username": "postgres", "password": "an-admin-password"}

    url = admin_url("dev", ssm=client, read_secret={SECRET_ARN: json.dumps(secret)}.__getitem__)

    assert parse_dsn(url)["user"] == "postgres" and parse_dsn(url)["host"] == "db.internal"


def test_without_the_core_stack_the_error_says_to_deploy_it_first(
    ssm: tuple[Any, Stubber],
) -> None:
    client, stubber = ssm
    stubber.add_client_error("get_parameter", "ParameterNotFound", expected_params=PARAMETER)

    with pytest.raises(StageMigrationError, match=r"make deploy-core STAGE=dev"):
        admin_url("dev", ssm=client, read_secret=lambda arn: pytest.fail("no secret is read"))


def test_database_url_wins_and_nothing_is_asked_of_aws(
    ssm: tuple[Any, Stubber], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://admin@db/sourceflow")

    assert admin_url("dev", ssm=ssm[0], read_secret=lambda arn: "") == (
        "postgresql://admin@db/sourceflow"
    )


def test_a_stage_that_is_no_stage_name_is_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert migrate_stage.main(["--stage", "Dev_1"]) == 2
    assert "is not a stage name" in capsys.readouterr().err

"""Who `sourceflow` acts as comes from a credential, never from a name in the environment: a
person's credentials file (SOURCEFLOW_CREDENTIALS) or, in the cloud, an IAM authentication token
for the person's own database login."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg2.extensions import parse_dsn

from ops.config import CREDENTIALS_VARIABLE, OperatorConfig, OperatorError

ADMIN = "postgresql://postgres:admin@127.0.0.1:5432/sourceflow"
ALICE = "postgresql://alice:alices-password@127.0.0.1:5432/sourceflow"


def stack_dir(tmp_path: Path) -> Path:
    (tmp_path / "local.env").write_text(f"DATABASE_URL={ADMIN}\nSOURCEFLOW_STAGE=local\n")
    return tmp_path


def test_user_and_logname_do_not_change_who_acts(tmp_path: Path) -> None:
    # Given a running stack, When USER and LOGNAME name someone else
    config = OperatorConfig.load(stack_dir(tmp_path), {"USER": "bob", "LOGNAME": "bob"})
    # Then the login is still the one local.env holds
    assert config.database_url() == ADMIN


def test_a_persons_credentials_file_is_the_login(tmp_path: Path) -> None:
    # Given alice's credentials file, and an exported DATABASE_URL besides
    people = tmp_path / "people"
    people.mkdir()
    (people / "alice.env").write_text(f"DATABASE_URL={ALICE}\n")
    environ = {CREDENTIALS_VARIABLE: str(people / "alice.env"), "DATABASE_URL": ADMIN}
    # When the operator's config is loaded, Then alice's login is used
    config = OperatorConfig.load(stack_dir(tmp_path), environ)
    assert config.database_url() == ALICE
    assert str(people / "alice.env") in config.origin


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read it"), ("SOMETHING=else\n", "has no DATABASE_URL")],
)
def test_a_missing_or_empty_credentials_file_is_named(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "carol.env"
    if content is not None:
        path.write_text(content)
    with pytest.raises(OperatorError, match=message) as caught:
        OperatorConfig.load(stack_dir(tmp_path), {CREDENTIALS_VARIABLE: str(path)})
    assert str(path) in str(caught.value)


def iam_config(url: str) -> OperatorConfig:
    return OperatorConfig(
        {
            "DATABASE_URL": url,
            "SOURCEFLOW_DB_IAM_AUTH": "true",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "secret",
        },
        "test",
    )


def test_in_the_cloud_the_password_is_an_iam_token_for_the_persons_login() -> None:
    # Given a DATABASE_URL with alice's login and no password, and IAM authentication on
    config = iam_config("postgresql://alice@db.example.com:5432/sourceflow")
    # When the operator connects, Then the password is an RDS IAM token signed for that login
    parts = parse_dsn(config.database_url())
    assert parts["user"] == "alice"
    assert parts["password"].startswith("db.example.com:5432/?Action=connect&DBUser=alice")
    assert "X-Amz-Signature=" in parts["password"]
    # And the server's certificate is verified (a token must not go to an impostor)
    assert parts["sslmode"] == "verify-full"


def test_iam_authentication_refuses_a_url_with_a_password() -> None:
    with pytest.raises(OperatorError, match="no password"):
        iam_config("postgresql://alice:guess@db.example.com/sourceflow").database_url()

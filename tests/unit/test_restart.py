"""What the embedded stack keeps across a restart (local/restart.py): its ports, and the
buckets' objects and the secrets people put into the emulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local import restart
from local.restart import EmulatorState, KeptPortTaken, kept_password, kept_port

RAW = "sourceflow-local-raw"
DROPS = "sourceflow-local-partner-drops"


def test_a_port_is_chosen_once_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    free = iter([41001, 41002])
    monkeypatch.setattr(restart, "_free_port", lambda: next(free))
    monkeypatch.setattr(restart, "_is_free", lambda port: True)
    assert (kept_port(tmp_path, "moto"), kept_port(tmp_path, "vendor")) == (41001, 41002)
    assert kept_port(tmp_path, "moto") == 41001
    assert json.loads((tmp_path / "ports.json").read_text()) == {"moto": 41001, "vendor": 41002}


def test_a_kept_port_another_process_took_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ports.json").write_text('{"vendor": 41002}')
    monkeypatch.setattr(restart, "_is_free", lambda port: False)
    with pytest.raises(KeptPortTaken, match=r"port 41002, kept in .* for the vendor .* in use"):
        kept_port(tmp_path, "vendor")


def test_a_password_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "partner.password"
    made = kept_password(path)
    assert len(made) >= 24 and path.stat().st_mode & 0o777 == 0o600
    assert kept_password(path) == made


@mock_aws
def test_the_buckets_but_the_raw_one_and_the_secrets_come_back_in_a_fresh_emulator(
    tmp_path: Path,
) -> None:
    # Given an emulator with drops, a bucket of the operator's own, raw output and secrets
    s3, secrets = boto3.client("s3", region_name="us-east-1"), _secrets()
    for bucket in (RAW, DROPS, "operators-bucket"):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=DROPS, Key="acme/drop-001.csv", Body=b"id,last_modified\n1,2026\n")
    s3.put_object(Bucket=DROPS, Key="../odd key/é", Body=b"same\n")
    s3.put_object(Bucket="operators-bucket", Key="x.jsonl", Body=b"same\n")
    s3.put_object(Bucket=RAW, Key="src/run/manifest.json", Body=b"{}")
    secrets.create_secret(Name="sourceflow/local/sources/a/api-key", SecretString="k" * 20)
    secrets.create_secret(Name="sourceflow/local/sources/b/blob", SecretBinary=b"\x00\xff")

    # When it is saved, and the emulator starts afresh (the stack creates its own buckets)
    state = EmulatorState.of(tmp_path)
    state.save(s3, secrets, raw_bucket=RAW)
    assert (tmp_path / "emulator").stat().st_mode & 0o777 == 0o700
    _empty(s3, secrets)
    s3.create_bucket(Bucket=RAW)
    s3.create_bucket(Bucket=DROPS)
    assert state.restore(s3, secrets) == 5

    # Then every object but the raw ones is back, byte for byte, and every secret
    assert _objects(s3) == {
        (DROPS, "acme/drop-001.csv"): b"id,last_modified\n1,2026\n",
        (DROPS, "../odd key/é"): b"same\n",
        ("operators-bucket", "x.jsonl"): b"same\n",
    }
    assert (
        secrets.get_secret_value(SecretId="sourceflow/local/sources/a/api-key")["SecretString"]
        == "k" * 20
    )
    assert (
        secrets.get_secret_value(SecretId="sourceflow/local/sources/b/blob")["SecretBinary"]
        == b"\x00\xff"
    )


def test_nothing_saved_restores_nothing(tmp_path: Path) -> None:
    assert EmulatorState.of(tmp_path).restore(s3=None, secretsmanager=None) == 0


def _secrets() -> Any:
    return boto3.client("secretsmanager", region_name="us-east-1")


def _empty(s3: Any, secrets: Any) -> None:
    for bucket in s3.list_buckets()["Buckets"]:
        for listed in s3.list_objects_v2(Bucket=bucket["Name"]).get("Contents", []):
            s3.delete_object(Bucket=bucket["Name"], Key=listed["Key"])
        s3.delete_bucket(Bucket=bucket["Name"])
    for listed in secrets.list_secrets()["SecretList"]:
        secrets.delete_secret(SecretId=listed["ARN"], ForceDeleteWithoutRecovery=True)


def _objects(s3: Any) -> dict[tuple[str, str], bytes]:
    found = {}
    for bucket in s3.list_buckets()["Buckets"]:
        for listed in s3.list_objects_v2(Bucket=bucket["Name"]).get("Contents", []):
            body = s3.get_object(Bucket=bucket["Name"], Key=listed["Key"])["Body"].read()
            found[(bucket["Name"], listed["Key"])] = body
    return found

"""`sourceflow up`: one command starts the whole stack, Ctrl-C stops it, a second `up` reuses
the data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest
import requests
from psycopg2.extensions import make_dsn

from local.stack import aws_client
from ops.config import read_env_file
from tests.e2e.harness import WAIT_SECONDS

REQUIRED = {
    "DATABASE_URL",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "STATE_MACHINE_ARN",
    "RAW_BUCKET",
    "VENDOR_URL",
}


def _up(state_dir: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    process = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "up", "--state-dir", str(state_dir), "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    env_file = state_dir / "local.env"
    deadline = time.monotonic() + WAIT_SECONDS
    while not env_file.exists():
        assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "sourceflow up did not become ready"
        time.sleep(0.2)
    return process, read_env_file(env_file)


def _stop(process: subprocess.Popen[bytes]) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=WAIT_SECONDS)
    assert process.returncode == 0, output.decode()
    return output.decode()


def test_up_writes_local_env_stops_on_ctrl_c_and_reuses_data(tmp_path: Path) -> None:
    # Given `sourceflow up` running
    process, env = _up(tmp_path)
    try:
        # Then local.env says how to reach every part, and each part answers
        assert env.keys() >= REQUIRED
        assert requests.get(f"{env['VENDOR_URL']}/health", timeout=WAIT_SECONDS).ok
        sfn = aws_client(env, "stepfunctions")
        described = sfn.describe_state_machine(stateMachineArn=env["STATE_MACHINE_ARN"])
        assert "Validate" in described["definition"]
        with psycopg2.connect(env["DATABASE_URL"]) as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO public.source (source_id, name, source_type)"
                " VALUES ('kept-across-restarts', 'kept', 'http_api')"
            )
        conn.close()
        # And each person has a login of their own, in a file only the owner can read, and the
        # database asks every login for its password (SCRAM): a wrong one is refused
        for person in ("alice", "bob"):
            credentials = tmp_path / "people" / f"{person}.env"
            assert credentials.stat().st_mode & 0o777 == 0o600
            login = read_env_file(credentials)["DATABASE_URL"]
            with closing(psycopg2.connect(login)) as conn, conn.cursor() as cur:
                cur.execute("SELECT session_user")
                assert cur.fetchone() == (person,)
            with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
                psycopg2.connect(make_dsn(login, password="guess")).close()
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(make_dsn(env["DATABASE_URL"], password="")).close()
    finally:
        # When Ctrl-C arrives
        output = _stop(process)

    # Then everything stopped and local.env is gone
    assert "stopped" in output
    assert not (tmp_path / "local.env").exists()
    assert _refused(env["VENDOR_URL"]) and _refused(env["AWS_ENDPOINT_URL"])

    # And a second `up` on the same state directory still has the data
    process, env = _up(tmp_path)
    try:
        with psycopg2.connect(env["DATABASE_URL"]) as conn, conn.cursor() as cur:
            cur.execute("SELECT name FROM public.source WHERE source_id = 'kept-across-restarts'")
            assert cur.fetchone() == ("kept",)
        conn.close()
    finally:
        _stop(process)


def _refused(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError:
        return True
    return False

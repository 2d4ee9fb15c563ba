"""`sourceflow up`: one command starts the whole stack, Ctrl-C or SIGTERM stops it however it
was started, a dead worker is started again, and a second `up` on the same state directory
reuses the data: the sources registered on the first keep working."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
from psycopg2.extensions import make_dsn

from local.demo_sources import VendorData
from local.partner import (
    PartnerSources,
    create_listings_table,
    put_drop,
    put_source_secret,
    upsert_listings,
)
from local.stack import aws_client
from ops.config import read_env_file
from shared.rules.flows import WindowField
from shared.store.db import Database
from shared.store.sources import SourceSpec, register_source
from shared.timefmt import parse_iso
from tests.builders import listing
from tests.e2e.harness import RUN_SECONDS, WAIT_SECONDS, wait_for

REQUIRED = {
    "DATABASE_URL",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "STATE_MACHINE_ARN",
    "RAW_BUCKET",
    "VENDOR_URL",
}


def _up(
    state_dir: Path, output: Path, *, background: bool = False
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """`sourceflow up` with one worker per service, its output in `output`. In the
    `background`, as a shell starts `sourceflow up &`: with SIGINT ignored."""
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ops.cli",
            "up",
            "--state-dir",
            str(state_dir),
            "--workers",
            "1",
            "--console-port",
            "0",  # any free one: another `up` on this machine may hold the default
        ],
        env=env,
        stdout=output.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=_ignore_sigint if background else None,
    )
    env_file = state_dir / "local.env"
    deadline = time.monotonic() + WAIT_SECONDS
    while not env_file.exists():
        assert process.poll() is None, output.read_text()
        assert time.monotonic() < deadline, "sourceflow up did not become ready"
        time.sleep(0.2)
    return process, read_env_file(env_file)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop(process: subprocess.Popen[bytes], output: Path, signum: int = signal.SIGINT) -> str:
    process.send_signal(signum)
    try:
        process.wait(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(
            f"sourceflow up did not stop on {signal.Signals(signum).name}"
        ) from None
    assert process.returncode == 0, output.read_text()
    return output.read_text()


def test_up_writes_local_env_stops_on_ctrl_c_and_reuses_data(tmp_path: Path) -> None:
    # Given `sourceflow up` running
    output = tmp_path / "up.out"
    process, env = _up(tmp_path, output)
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
        # And the console is served, refusing whoever has not signed in
        console = wait_for(
            lambda: re.search(r"console: (http://\S+)", output.read_text()), "the console's URL"
        ).group(1)
        assert requests.get(f"{console}api/sources", timeout=WAIT_SECONDS).status_code == 401
    finally:
        # When Ctrl-C arrives
        said = _stop(process, output)

    # Then everything stopped and local.env is gone
    assert "stopped" in said
    assert not (tmp_path / "local.env").exists()
    assert _refused(env["VENDOR_URL"]) and _refused(env["AWS_ENDPOINT_URL"])

    # And a second `up` on the same state directory still has the data
    process, env = _up(tmp_path, output)
    try:
        with psycopg2.connect(env["DATABASE_URL"]) as conn, conn.cursor() as cur:
            cur.execute("SELECT name FROM public.source WHERE source_id = 'kept-across-restarts'")
            assert cur.fetchone() == ("kept",)
        conn.close()
    finally:
        _stop(process, output)


def _refused(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError:
        return True
    return False


def test_sources_work_across_restarts_a_dead_worker_is_replaced_and_signals_stop_it(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    # Given `sourceflow up` started in the background, as `sourceflow up &` (SIGINT ignored), and
    # three sources registered on it: the vendor's API with its API key in a secret of its own,
    # a partner's drop in S3, a partner's table
    first = tmp_path / "up-1.out"
    process, env = _up(state_dir, first, background=True)
    try:
        records = _register_sources(env)
    finally:
        # When Ctrl-C (SIGINT) reaches it, Then it stops
        assert "stopped" in _stop(process, first, signal.SIGINT)

    # And when `up` starts again on the same state directory
    second = tmp_path / "up-2.out"
    process, again = _up(state_dir, second, background=True)
    try:
        # Then every address is the same
        for key in ("VENDOR_URL", "AWS_ENDPOINT_URL", "DATABASE_URL", "DROPS_BUCKET"):
            assert again[key] == env[key], key
        # And a third `up` on the same state directory is refused in one line, touching nothing
        third = subprocess.run(
            [sys.executable, "-m", "ops.cli", "up", "--state-dir", str(state_dir)],
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
        )
        assert third.returncode == 1 and "Traceback" not in third.stderr, third.stderr
        [line] = third.stderr.strip().splitlines()
        assert "is in use by another process (another `sourceflow up`" in line
        assert read_env_file(state_dir / "local.env") == again
        # And each source's run succeeds with its records
        for source_id, expected in records.items():
            run = _run(state_dir, source_id)
            assert (run["status"], run["records"]) == ("succeeded", expected(run)), run

        # When a worker dies
        dead = wait_for(lambda: _worker_pid(process.pid, "download"), "the download worker")
        os.kill(dead, signal.SIGKILL)
        # Then the supervisor starts another, and says so in the worker's log and its output
        wait_for(
            lambda: _worker_pid(process.pid, "download") not in (None, dead),
            "the download worker to be started again",
        )
        death = [
            json.loads(line)
            for line in (state_dir / "logs" / "download-0.log").read_text().splitlines()
            if line.startswith("{") and '"exit_status"' in line
        ]
        assert death and death[-1]["exit_status"] == -signal.SIGKILL, death
        assert "download-0 was killed by SIGKILL" in second.read_text()
        # And a run still succeeds
        assert _run(state_dir, HTTP_SOURCE)["status"] == "succeeded"
    finally:
        # When SIGTERM reaches it, Then it stops
        assert "stopped" in _stop(process, second, signal.SIGTERM)


HTTP_SOURCE, DROPS_SOURCE, TABLE_SOURCE = "restart-api", "restart-drops", "restart-table"


def _register_sources(env: dict[str, str]) -> dict[str, Callable[[dict[str, Any]], int]]:
    """The three sources; for each, how many records a run of it loads (given the run)."""
    partner = PartnerSources.from_env(env)
    secretsmanager, s3 = aws_client(env, "secretsmanager"), aws_client(env, "s3")
    now = datetime.now(UTC)
    rows = [listing("restart", index, now - timedelta(hours=index + 1)) for index in range(5)]
    put_drop(s3, partner.drops_bucket, "restart/drop-001.csv", rows, "csv")
    create_listings_table(partner.owner_url, "restart_listings")
    upsert_listings(partner.owner_url, "restart_listings", rows[:3])
    api_key = put_source_secret(
        secretsmanager,
        partner.secrets.secret_for(HTTP_SOURCE, "api-key"),
        "an-api-key-kept-across-restarts",
    )
    vendor = VendorData(env["VENDOR_URL"], "listings-a")
    specs = [
        SourceSpec(
            HTTP_SOURCE, "api", "http_api", {**vendor.connection(), "api_key_secret": api_key}
        ),
        SourceSpec(DROPS_SOURCE, "drops", "s3_files", partner.drops_connection("restart/", "csv")),
        SourceSpec(
            TABLE_SOURCE,
            "table",
            "postgres",
            partner.table_connection(
                "restart_listings", partner.bind_reader_password(secretsmanager, TABLE_SOURCE)
            ),
        ),
    ]
    db = Database(env["DATABASE_URL"], application_name="sourceflow-tests")
    try:
        for spec in specs:
            register_source(db, spec)
    finally:
        db.close()
    return {
        HTTP_SOURCE: lambda run: vendor.count(
            WindowField.LAST_MODIFIED, parse_iso(run["window_start"]), parse_iso(run["window_end"])
        ),
        DROPS_SOURCE: lambda _: len(rows),
        TABLE_SOURCE: lambda _: 3,
    }


def _run(state_dir: Path, source_id: str) -> dict[str, Any]:
    """`sourceflow run SOURCE --wait`, then the run as `sourceflow runs --json` shows it."""
    cli = [sys.executable, "-m", "ops.cli"]
    where = ["--state-dir", str(state_dir)]
    ran = subprocess.run(
        [*cli, "run", source_id, "--wait", *where],
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    listed = subprocess.run(
        [*cli, "runs", "--source", source_id, "--limit", "1", "--json", *where],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert listed.returncode == 0, listed.stderr
    [run] = json.loads(listed.stdout)
    return dict(run)


def _worker_pid(supervisor: int, service: str) -> int | None:
    """The process id of the service's worker that `up` (pid `supervisor`) started, if any."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    for child in map(int, children):
        with contextlib.suppress(FileNotFoundError):
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if argv[-3:-1] == [b"local.worker", service.encode()]:
                return child
    return None
